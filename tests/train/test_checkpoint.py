"""Orbax checkpoints: exact round trip, keep-last-N, and corrupted or partial directories."""

from __future__ import annotations

import json
import os
import shutil

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from train_testing import TinyCNN

from jaxcpd.train import Checkpointer, CheckpointError, fingerprint


class DropoutNet(nnx.Module):
    """A model that carries RNG state, which checkpoints must preserve."""

    def __init__(self, seed: int):
        rngs = nnx.Rngs(seed)
        self.cnn = TinyCNN(rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.cnn(x))


def _pair(seed: int = 0):
    model = DropoutNet(seed)
    return model, nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)


@nnx.jit
def _step(model, optimizer, x):
    grads = nnx.grad(lambda m: m(x).sum())(model)  # also advances the dropout RNG and BN statistics
    optimizer.update(model, grads)


def _advance(model, optimizer, steps: int = 2) -> None:
    x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
    for _ in range(steps):
        _step(model, optimizer, x)


def _state(model, optimizer):
    return {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}


def _save_steps(directory, steps, keep=5):
    """Saves a checkpoint after each of ``steps`` and returns the fingerprints by step."""
    model, optimizer = _pair()
    checkpoints = Checkpointer(directory, keep=keep)
    prints = {}
    for step in steps:
        _advance(model, optimizer, 1)
        checkpoints.save(step, model, optimizer, {"data_position": step})
        prints[step] = fingerprint(_state(model, optimizer))
    checkpoints.close()
    return prints


def _restore(directory):
    model, optimizer = _pair(seed=7)
    checkpoints = Checkpointer(directory)
    meta = checkpoints.restore_latest(model, optimizer)
    checkpoints.close()
    return meta, fingerprint(_state(model, optimizer))


def _data_files(directory, step):
    root = os.path.join(directory, str(step), "state")
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if os.sep + "d" + os.sep in
            os.path.join(d, f)]


def test_round_trip_restores_parameters_statistics_optimizer_and_rng(tmp_path):
    model, optimizer = _pair()
    _advance(model, optimizer)
    checkpoints = Checkpointer(tmp_path)
    checkpoints.save(2, model, optimizer, {"data_position": 2, "history": [{"loss": 1.5}]})
    checkpoints.close()

    other, other_optimizer = _pair(seed=7)
    assert fingerprint(_state(other, other_optimizer)) != fingerprint(_state(model, optimizer))
    meta = Checkpointer(tmp_path).restore_latest(other, other_optimizer)
    assert meta["step"] == 2 and meta["data_position"] == 2 and meta["history"] == [{"loss": 1.5}]
    saved, restored = _state(model, optimizer), _state(other, other_optimizer)
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(restored), strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    # the restored RNG continues the same stream
    x = np.ones((4, 28, 28, 1), np.float32)
    forward = nnx.jit(lambda m, x: m(x))
    np.testing.assert_array_equal(forward(model, x), forward(other, x))


def test_keeps_the_last_n(tmp_path):
    _save_steps(tmp_path, [1, 2, 3, 4, 5], keep=2)
    assert sorted(os.listdir(tmp_path)) == ["4", "5"]


def test_empty_directory_restores_nothing(tmp_path):
    assert _restore(tmp_path) == (None, fingerprint(_state(*_pair(seed=7))))


def test_unfinished_save_is_ignored(tmp_path):
    prints = _save_steps(tmp_path, [1, 2])
    # what a run killed in the middle of an orbax save leaves behind
    shutil.copytree(tmp_path / "2", tmp_path / "3.orbax-checkpoint-tmp-1700000000")
    meta, restored = _restore(tmp_path)
    assert meta["step"] == 2 and restored == prints[2]


def test_missing_array_files_fall_back_to_the_previous_step(tmp_path):
    prints = _save_steps(tmp_path, [1, 2, 3])
    for path in _data_files(tmp_path, 3):
        os.remove(path)
    with pytest.warns(UserWarning, match="checkpoint step 3 .* is unusable"):
        meta, restored = _restore(tmp_path)
    assert meta["step"] == 2 and restored == prints[2]
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]
    assert [name.split("-")[0] for name in os.listdir(f"{tmp_path}.corrupted")] == ["3"]


def test_overwritten_array_bytes_are_detected(tmp_path):
    prints = _save_steps(tmp_path, [1, 2])
    for path in _data_files(tmp_path, 2):
        size = os.path.getsize(path)
        with open(path, "wb") as file:
            file.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    with pytest.warns(UserWarning, match="checkpoint step 2"):
        meta, restored = _restore(tmp_path)
    assert meta["step"] == 1 and restored == prints[1]


def test_fingerprint_mismatch_is_never_loaded(tmp_path):
    prints = _save_steps(tmp_path, [1, 2])
    meta_path = tmp_path / "2" / "meta" / "metadata"
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"] = "0" * 64  # as if the arrays had changed under the metadata
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="do not match the fingerprint"):
        meta, restored = _restore(tmp_path)
    assert meta["step"] == 1 and restored == prints[1]


def test_no_restorable_step_raises_and_moves_nothing(tmp_path):
    _save_steps(tmp_path, [1, 2])
    for step in (1, 2):
        for path in _data_files(tmp_path, step):
            os.remove(path)
    with pytest.raises(CheckpointError, match="no checkpoint in .* could be restored"):
        _restore(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_state_of_another_structure_is_a_clear_error(tmp_path):
    _save_steps(tmp_path, [1])
    model = DropoutNet(0)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)  # saved with SGD + momentum
    with pytest.raises(CheckpointError, match="another structure"):
        Checkpointer(tmp_path).restore_latest(model, optimizer)
