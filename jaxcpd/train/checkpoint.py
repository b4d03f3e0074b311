"""Orbax checkpoints of a training run: periodic, atomic, keep-last-N, verified on restore.

A checkpoint holds the model state (parameters, BatchNorm statistics, any RNG
state), the optimizer state (including the plateau scheduler) and a JSON ``meta``
item with the step, the data-stream position, the seed and the metrics history.

Atomicity is orbax's: a step is written into a temporary directory and renamed
when complete, so a run killed mid-save leaves no step that looks finished. On
top of that every checkpoint stores a SHA-256 fingerprint of its arrays; a step
that fails to restore or whose fingerprint does not match is reported, moved
aside, and the next older step is tried. If no step restores, nothing is moved
and :class:`CheckpointError` says why each one failed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx


class CheckpointError(RuntimeError):
    """No checkpoint in a directory could be restored."""


def fingerprint(tree: Any) -> str:
    """SHA-256 over the paths, dtypes, shapes and bytes of every array in ``tree``.

    Args:
      tree: a pytree of arrays (replicated arrays are read from this host's first shard).

    Returns:
      Hex digest.
    """
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            leaf = leaf.addressable_data(0)
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _training_state(model: nnx.Module, optimizer: nnx.Optimizer) -> dict[str, nnx.State]:
    return {"model": nnx.state(model), "optimizer": nnx.state(optimizer)}


class Checkpointer:
    """Saves and restores ``(model, optimizer, meta)`` under one directory.

    Args:
      directory: where step subdirectories are written (created if missing).
      keep: number of most recent checkpoints kept.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3):
        self.directory = os.path.abspath(directory)
        self._keep = keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True)
        return ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def save(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer, meta: dict[str, Any]) -> None:
        """Starts writing a checkpoint in the background (the arrays are copied first).

        Args:
          step: the training step the state is at.
          model: the model.
          optimizer: its optimizer.
          meta: JSON-serialisable run information; a ``fingerprint`` entry is added.
        """
        state = _training_state(model, optimizer)
        meta = {**meta, "step": step, "fingerprint": fingerprint(state)}
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        )

    def restore_latest(self, model: nnx.Module, optimizer: nnx.Optimizer) -> dict[str, Any] | None:
        """Loads the newest good checkpoint into ``model`` and ``optimizer`` in place.

        Steps that fail to load or fail the fingerprint check are moved to
        ``<directory>.corrupted/`` with a warning, once an older step has loaded.

        Args:
          model: model of the same structure as the saved one (its arrays give shapes and shardings).
          optimizer: optimizer of the same structure as the saved one.

        Returns:
          The checkpoint's ``meta`` dict, or ``None`` if the directory has no checkpoint.

        Raises:
          CheckpointError: if checkpoints exist but none can be restored.
        """
        target = _training_state(model, optimizer)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        items = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
        failures: list[tuple[int, str]] = []
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                restored = self._manager.restore(step, args=items)
                if restored.meta.get("fingerprint") != fingerprint(restored.state):
                    raise CheckpointError("array contents do not match the fingerprint saved with them")
            except Exception as err:  # any failure to load means: try an older step
                failures.append((step, f"{type(err).__name__}: {err}"))
                continue
            nnx.update(model, restored.state["model"])
            nnx.update(optimizer, restored.state["optimizer"])
            if failures:
                self._quarantine(failures)
            return restored.meta
        if failures:
            reasons = "\n".join(f"  step {step}: {reason[:500]}" for step, reason in failures)
            raise CheckpointError(
                f"no checkpoint in {self.directory} could be restored (corrupted, or saved from a model "
                f"or optimizer of another structure):\n{reasons}"
            )
        return None

    def _quarantine(self, failures: list[tuple[int, str]]) -> None:
        self._manager.close()
        aside = f"{self.directory}.corrupted"
        os.makedirs(aside, exist_ok=True)
        for step, reason in failures:
            destination = os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
            if jax.process_index() == 0:
                shutil.move(os.path.join(self.directory, str(step)), destination)
            warnings.warn(
                f"checkpoint step {step} in {self.directory} is unusable ({reason[:300]}); "
                f"moved to {destination}, resumed from an older step",
                stacklevel=3,
            )
        self._manager = self._open()

    def close(self) -> None:
        """Waits for pending saves to finish and releases the directory."""
        self._manager.wait_until_finished()
        self._manager.close()
