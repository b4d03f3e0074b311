"""Evaluation: top-1/top-5 accuracy and loss over one ordered pass of a data set."""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from .mesh import make_mesh, replicate, shard_batch
from .metrics import batch_metrics, summarize


@nnx.jit
def eval_step(model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Summed metrics of one batch (see :func:`jaxcpd.train.metrics.batch_metrics`)."""
    return batch_metrics(model(batch["image"]), batch["label"], batch["mask"])


def evaluate(model: nnx.Module, data: Iterable[dict], *, mesh: Mesh | None = None) -> dict[str, float]:
    """Evaluates a classifier with BatchNorm running statistics and dropout off.

    The model itself is left in whatever mode it was in (this uses an ``nnx.view``);
    its arrays are replicated onto ``mesh``.

    Args:
      model: an NNX module mapping NHWC images to logits.
      data: batches with ``image``, ``label`` and ``mask``, e.g. a
        :class:`jaxcpd.train.Batches` (iterating it makes one ordered pass).
      mesh: device mesh; default every device.

    Returns:
      ``{"top1", "top5", "loss"}``: accuracies as fractions and mean cross-entropy.

    Raises:
      ValueError: if ``data`` yields no batch.
    """
    mesh = make_mesh() if mesh is None else mesh
    replicate(model, mesh)
    eval_model = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
    totals = None
    for batch in data:
        step = eval_step(eval_model, shard_batch(batch, mesh))
        totals = step if totals is None else jax.tree.map(jnp.add, totals, step)
    if totals is None:
        raise ValueError("data: yielded no batch")
    return summarize(totals)
