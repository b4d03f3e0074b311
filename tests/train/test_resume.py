"""Kill/resume: a run killed with SIGKILL and resumed ends exactly where an uninterrupted run does."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from flax import nnx
from train_testing import TinyCNN

from jaxcpd.train import TrainConfig, finetune

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, KILL_BEFORE = 10, 9
CONFIG = TrainConfig(steps=STEPS, learning_rate=0.05, log_every=1, checkpoint_every=3, progress=False)

# Runs the same training in a fresh process and kills it (SIGKILL: no cleanup) when it
# asks for the batch of step KILL_BEFORE. Its saves are made synchronous so that the
# kill lands at a known point (steps 3 and 6 saved); a kill in the middle of a save is
# covered in test_checkpoint.py.
_KILLED_RUN = textwrap.dedent(
    """
    import dataclasses, os, signal, sys
    from flax import nnx
    import jaxcpd.train.loop as loop
    from jaxcpd.train import Checkpointer, load
    from test_resume import CONFIG, KILL_BEFORE
    from train_testing import TinyCNN

    save = Checkpointer.save

    def save_and_wait(self, *args):
        save(self, *args)
        self._manager.wait_until_finished()

    Checkpointer.save = save_and_wait
    calls = 0
    shard_batch = loop.shard_batch

    def shard_then_die(batch, mesh):
        global calls
        calls += 1
        if calls == KILL_BEFORE:
            os.kill(os.getpid(), signal.SIGKILL)
        return shard_batch(batch, mesh)

    loop.shard_batch = shard_then_die
    config = dataclasses.replace(CONFIG, run_dir=sys.argv[1])
    loop.finetune(TinyCNN(rngs=nnx.Rngs(0)), load("mnist-subset", "train", batch_size=32), None, config)
    """
)


def _state(model):
    return jax.tree.leaves(nnx.state(model))


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("killed")
    command = [sys.executable, "-c", _KILLED_RUN, str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=HERE)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted(mnist_train):
    return finetune(TinyCNN(rngs=nnx.Rngs(0)), mnist_train, None, CONFIG)


def _resume(run_dir, data):
    config = dataclasses.replace(CONFIG, run_dir=str(run_dir), resume=True)
    return finetune(TinyCNN(rngs=nnx.Rngs(1)), data, None, config)  # other init: everything comes from disk


def test_resumed_run_ends_with_the_uninterrupted_parameters(killed_run, uninterrupted, mnist_train, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    killed_records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in killed_records] == list(range(1, KILL_BEFORE))  # it died after step 8

    model, history = _resume(run_dir, mnist_train)
    reference, reference_history = uninterrupted
    for got, want in zip(_state(model), _state(reference), strict=True):
        np.testing.assert_array_equal(got, want)
    untimed = [{k: v for k, v in r.items() if k != "images_per_sec"} for r in history]
    assert untimed == [{k: v for k, v in r.items() if k != "images_per_sec"} for r in reference_history]
    assert history[:6] == killed_records[:6]  # restored from the checkpoint; steps 7-10 recomputed
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"kind": "resume", "step": 6} in records


def test_corrupted_latest_checkpoint_falls_back_and_still_ends_identically(
    killed_run, uninterrupted, mnist_train, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(killed_run, run_dir)
    for path in (run_dir / "checkpoints" / "6" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"\0" * path.stat().st_size)
    with pytest.warns(UserWarning, match="checkpoint step 6 .* is unusable"):
        model, _ = _resume(run_dir, mnist_train)
    for got, want in zip(_state(model), _state(uninterrupted[0]), strict=True):
        np.testing.assert_array_equal(got, want)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"kind": "resume", "step": 3} in records
