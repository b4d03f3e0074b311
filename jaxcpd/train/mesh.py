"""Data parallelism: a one-axis device mesh, replicated state, batches sharded on ``'data'``.

This is what ``pmap`` used to do, written the current way: ``jit`` over arrays
with a ``NamedSharding``. Parameters are replicated, the batch is split along its
first axis across every device of every host, and XLA inserts the cross-device
reductions, so BatchNorm statistics and the loss are computed over the global
batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[int, int]:
    """Joins a multi-host run; call it first, before any other JAX call.

    On Cloud TPU and SLURM/Open MPI clusters all arguments can be left out and are
    detected. Calling it again after a successful call does nothing.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: number of processes (hosts) in the run.
      process_id: this process's index.

    Returns:
      ``(jax.process_index(), jax.process_count())``.
    """
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(
            coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
        )
    return jax.process_index(), jax.process_count()


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``'data'``.

    Args:
      devices: devices to use; default every device of every host (``jax.devices()``).

    Returns:
      The mesh.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: need at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(node: Any, mesh: Mesh) -> None:
    """Places every array of an NNX object (model, optimizer) on all devices of ``mesh``, in place.

    Args:
      node: an ``nnx.Module``, ``nnx.Optimizer`` or other NNX graph node.
      mesh: the mesh to replicate over.
    """
    state = nnx.state(node)
    nnx.update(node, jax.device_put(state, NamedSharding(mesh, PartitionSpec())))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles every host's local batch into global arrays split along axis 0 over ``'data'``.

    Args:
      batch: this host's part of the global batch (NumPy arrays with equal first dimension).
      mesh: the mesh from :func:`make_mesh`.

    Returns:
      Global ``jax.Array`` s whose first dimension is the global batch size.

    Raises:
      ValueError: if the global batch does not split evenly over the mesh's devices.
    """
    global_size = len(next(iter(batch.values()))) * jax.process_count()
    if global_size % mesh.size:
        raise ValueError(f"batch: global batch of {global_size} does not split over the {mesh.size} devices")
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in batch.items()}
