"""The training loop on one device: what it trains, what it records, how it evaluates."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from train_testing import TinyCNN

from jaxcpd.train import TrainConfig, evaluate, finetune, load


def _params(model) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(map(str, path)): np.asarray(value) for path, value in flat}


def test_single_layer_finetuning_changes_only_that_layer(tiny_cnn, mnist_train):
    before = _params(tiny_cnn)
    stats_before = jax.tree.leaves(nnx.state(tiny_cnn, nnx.BatchStat))
    config = TrainConfig(steps=3, learning_rate=0.1, trainable=("conv2",), progress=False)
    model, _ = finetune(tiny_cnn, mnist_train, None, config)
    after = _params(model)
    changed = {name for name in before if not np.array_equal(before[name], after[name])}
    assert changed == {"conv2.kernel"}
    # BatchNorm runs in training mode: its running statistics move even in frozen layers
    assert not np.array_equal(stats_before[0], jax.tree.leaves(nnx.state(model, nnx.BatchStat))[0])
    assert model.bn1.use_running_average  # returned in evaluation mode


def test_history_metrics_file_and_evaluation_agree(tiny_cnn, mnist_train, mnist_test, tmp_path):
    config = TrainConfig(steps=6, log_every=2, eval_every=3, learning_rate=0.05, run_dir=str(tmp_path),
                         progress=False)
    model, history = finetune(tiny_cnn, mnist_train, mnist_test, config)
    kinds = [(record["kind"], record["step"]) for record in history]
    assert kinds == [("train", 2), ("eval", 3), ("train", 4), ("train", 6), ("eval", 6)]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history
    train = history[0]
    assert {"loss", "top1", "top5", "lr", "images_per_sec", "epoch"} <= set(train)
    assert train["lr"] == pytest.approx(0.05) and train["epoch"] == pytest.approx(2 / 125)
    assert history[-1] == {"kind": "eval", "step": 6, "epoch": pytest.approx(6 / 125),
                           **evaluate(model, mnist_test)}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["3", "6"]


class _Flat(nnx.Module):
    def __init__(self):
        self.fc = nnx.Linear(784, 10, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.fc(x.reshape(x.shape[0], -1))


def test_evaluate_matches_a_numpy_reference_and_ignores_padding():
    model = _Flat()
    data = load("mnist-subset", "test", batch_size=300)  # the last batch is two-thirds padding
    batches = list(data)
    images = np.concatenate([b["image"][b["mask"]] for b in batches]).reshape(1000, -1)
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    logits = images @ np.asarray(model.fc.kernel[...]) + np.asarray(model.fc.bias[...])
    loss = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, labels)).mean()
    order = np.argsort(-logits, axis=1)
    result = evaluate(model, data)
    assert result["top1"] == pytest.approx(np.mean(order[:, 0] == labels))
    assert result["top5"] == pytest.approx(np.mean((order[:, :5] == labels[:, None]).any(axis=1)))
    assert result["loss"] == pytest.approx(loss, rel=1e-5)


def test_resuming_with_another_seed_is_refused(tiny_cnn, mnist_train, tmp_path):
    finetune(tiny_cnn, mnist_train, None, TrainConfig(steps=1, run_dir=str(tmp_path), progress=False))
    config = TrainConfig(steps=2, run_dir=str(tmp_path), resume=True, seed=1, progress=False)
    with pytest.raises(ValueError, match="^resume: checkpoint made with seed=0, this run has 1"):
        finetune(TinyCNN(rngs=nnx.Rngs(0)), mnist_train, None, config)
