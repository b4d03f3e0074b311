"""Data parallelism on 8 simulated CPU devices, in a subprocess (XLA_FLAGS must precede JAX's start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# Trains the same model on the same global batches with a 1-device and an 8-device
# mesh and prints what the test compares.
_SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    from flax import nnx
    from jaxcpd.train import TrainConfig, evaluate, finetune, load, make_mesh, shard_batch
    from train_testing import TinyCNN

    assert jax.device_count() == 8, jax.devices()
    train = load("mnist-subset", "train", batch_size=64)
    test = load("mnist-subset", "test", batch_size=200)
    config = TrainConfig(steps=5, log_every=1, learning_rate=0.05, schedule="constant", progress=False)
    out = {}
    for name, mesh in [("one", make_mesh(jax.devices()[:1])), ("eight", make_mesh())]:
        model, history = finetune(TinyCNN(rngs=nnx.Rngs(0)), train, None, config, mesh=mesh)
        state = [np.asarray(leaf).tolist() for leaf in jax.tree.leaves(nnx.state(model))]
        losses = [r["loss"] for r in history]
        out[name] = {"loss": losses, "state": state, "eval": evaluate(model, test, mesh=mesh)}
    batch = shard_batch(next(train.stream(seed=0)), make_mesh())
    out["shards"] = sorted({shard.data.shape[0] for shard in batch["image"].addressable_shards})
    out["devices"] = len(batch["image"].sharding.device_set)
    try:
        finetune(TinyCNN(rngs=nnx.Rngs(0)), load("mnist-subset", "train", batch_size=12), None, config)
    except ValueError as err:
        out["error"] = str(err)
    try:
        evaluate(TinyCNN(rngs=nnx.Rngs(0)), load("mnist-subset", "test", batch_size=100))
    except ValueError as err:
        out["eval_error"] = str(err)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def result():
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-c", _SCRIPT]
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=here)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_eight_devices_give_the_one_device_losses(result):
    one, eight = result["one"], result["eight"]
    assert len(one["loss"]) == 5
    np.testing.assert_allclose(eight["loss"], one["loss"], rtol=1e-6)
    assert one["loss"][-1] < one["loss"][0]


def test_eight_devices_give_the_one_device_parameters_and_statistics(result):
    for got, want in zip(result["eight"]["state"], result["one"]["state"], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for key in ("top1", "top5", "loss"):
        assert result["eight"]["eval"][key] == pytest.approx(result["one"]["eval"][key], rel=1e-4, abs=1e-6)


def test_the_batch_is_split_over_all_devices(result):
    assert result["devices"] == 8 and result["shards"] == [8]


def test_a_batch_that_does_not_split_is_refused(result):
    assert result["error"] == "train_data: batch_size 12 does not split over the 8 devices"
    assert result["eval_error"] == "batch: global batch of 100 does not split over the 8 devices"
