"""TrainConfig validation and the optax recipe it describes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcpd.train import SCRATCH_CONFIG, TrainConfig, current_learning_rate, make_optimizer, trainable_filter


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("optimizer", "rmsprop"),
        ("schedule", "linear"),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("plateau_factor", 1.5),
        ("plateau_patience", -1),
        ("epochs", 0),
        ("steps", 0),
        ("eval_every", -5),
        ("checkpoint_every", 0),
        ("plateau_window", 0),
        ("log_every", 0),
        ("keep_checkpoints", 0),
        ("seed", -1),
        ("trainable", ("",)),
    ],
)
def test_bad_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        TrainConfig(**{field: value})


def test_resume_needs_a_run_dir():
    with pytest.raises(ValueError, match="^resume:"):
        TrainConfig(resume=True)


def test_defaults_are_the_paper_recipe_and_configs_are_plain_data():
    config = TrainConfig()
    assert (config.learning_rate, config.weight_decay, config.plateau_factor) == (1e-3, 1e-4, 0.1)
    assert config.schedule == "plateau"
    assert TrainConfig(trainable="layer4.1.conv1").trainable == ("layer4.1.conv1",)
    assert TrainConfig(**dataclasses.asdict(SCRATCH_CONFIG)) == SCRATCH_CONFIG
    assert TrainConfig(epochs=2.5).total_steps(10) == 25 and TrainConfig(steps=7).total_steps(10) == 7


def test_momentum_with_weight_decay_matches_pytorch_sgd():
    """torch.optim.SGD: g += wd * p; buf = m * buf + g; p -= lr * buf."""
    config = TrainConfig(learning_rate=0.1, momentum=0.9, weight_decay=0.01, schedule="constant")
    tx = make_optimizer(config, steps_per_epoch=10)
    params = jnp.array([1.0, -2.0])
    state = tx.init(params)
    p, buf = np.array([1.0, -2.0]), np.zeros(2)
    for grad in ([0.5, 0.1], [-0.2, 0.3]):
        updates, state = tx.update(jnp.array(grad), state, params, value=jnp.array(1.0))
        params = optax.apply_updates(params, updates)
        buf = 0.9 * buf + (np.array(grad) + 0.01 * p)
        p = p - 0.1 * buf
    np.testing.assert_allclose(params, p, rtol=1e-6)


class _Linear(nnx.Module):
    def __init__(self):
        self.layer1 = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
        self.layer10 = nnx.Linear(2, 1, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.layer10(self.layer1(x))


def test_plateau_schedule_decays_the_learning_rate_tenfold():
    model = _Linear()
    config = TrainConfig(learning_rate=1e-2, schedule="plateau", plateau_patience=1, plateau_window=2)
    optimizer = nnx.Optimizer(model, make_optimizer(config, steps_per_epoch=100), wrt=nnx.Param)
    grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    rates = []
    for _ in range(8):
        optimizer.update(model, grads, value=jnp.array(1.0))
        rates.append(current_learning_rate(config, optimizer, steps_per_epoch=100))
    # windows of 2 steps: the first sets the best loss, each later one fails to improve it
    # and, with patience 1, decays the rate tenfold
    np.testing.assert_allclose(rates, [1e-2, 1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-5)


def test_cosine_schedule_reaches_zero():
    config = TrainConfig(learning_rate=0.1, schedule="cosine", steps=4)
    model = _Linear()
    optimizer = nnx.Optimizer(model, make_optimizer(config, 1), wrt=nnx.Param)
    assert current_learning_rate(config, optimizer, 1) == pytest.approx(0.1)
    grads = nnx.state(model, nnx.Param)
    for _ in range(4):
        optimizer.update(model, grads, value=jnp.array(1.0))
    assert current_learning_rate(config, optimizer, 1) == pytest.approx(0.0)


def test_trainable_filter_selects_whole_name_components():
    model = _Linear()
    selected = nnx.state(model, trainable_filter(model, ("layer1",)))
    names = {".".join(map(str, path)) for path, _ in nnx.to_flat_state(selected)}
    assert names == {"layer1.kernel", "layer1.bias"}
    assert trainable_filter(model, ()) is nnx.Param


def test_unknown_trainable_prefix_lists_the_layers():
    message = r"^trainable: 'layer2' matches no parameter; layers are layer1, layer10"
    with pytest.raises(ValueError, match=message):
        trainable_filter(_Linear(), ("layer2",))


def test_equal_recipes_share_the_transformation_and_the_compiled_training_step(programs_compiled):
    from train_testing import TinyCNN

    from jaxcpd.train.loop import train_step

    config = TrainConfig(schedule="cosine", steps=20, seed=1)
    tx = make_optimizer(config, 10)
    assert tx is make_optimizer(dataclasses.replace(config, seed=2, eval_every=5), 10)
    assert tx is not make_optimizer(dataclasses.replace(config, steps=21), 10)
    assert tx is not make_optimizer(dataclasses.replace(config, learning_rate=0.1), 10)
    plateau = TrainConfig(schedule="plateau")
    assert make_optimizer(plateau, 10) is not make_optimizer(plateau, 11)  # the default plateau window
    labels = jnp.zeros((2,), jnp.int32)
    batch = {"image": jnp.ones((2, 8, 8, 1)), "label": labels, "mask": jnp.ones((2,), bool)}
    compiled = []
    for seed in (0, 1):  # two models of one structure, e.g. CPD and CPD-EPC at equal ranks
        model = TinyCNN(rngs=nnx.Rngs(seed))
        with programs_compiled() as names:
            train_step(model, nnx.Optimizer(model, tx, wrt=nnx.Param), batch)
        compiled.append(names)
    first, compiled = compiled
    assert "jit(train_step)" in first and "jit(train_step)" not in compiled, (first, compiled)
