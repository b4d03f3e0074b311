"""Classification metrics as masked sums, and the JSONL metrics file."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import optax


def batch_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """Sums over one batch, to be added across batches and finished by :func:`summarize`.

    Args:
      logits: ``(B, num_classes)``.
      labels: ``(B,)`` integer labels.
      mask: ``(B,)`` booleans; padding examples are ``False``.

    Returns:
      ``{"loss", "top1", "top5", "count"}``: summed loss, correct counts and example count.
      With fewer than five classes ``top5`` counts top-``num_classes`` hits.
    """
    mask = mask.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    _, top = jax.lax.top_k(logits, min(5, logits.shape[-1]))
    hits = top == labels[:, None]
    return {
        "loss": jnp.sum(losses * mask),
        "top1": jnp.sum(hits[:, 0] * mask),
        "top5": jnp.sum(jnp.any(hits, axis=1) * mask),
        "count": jnp.sum(mask),
    }


def summarize(totals: dict[str, jax.Array]) -> dict[str, float]:
    """Turns summed :func:`batch_metrics` into means.

    Args:
      totals: summed metrics.

    Returns:
      ``{"loss", "top1", "top5"}`` as floats; accuracies are fractions in ``[0, 1]``.
    """
    totals = jax.device_get(totals)
    count = max(float(totals["count"]), 1.0)
    return {key: float(totals[key]) / count for key in ("loss", "top1", "top5")}


class JsonlWriter:
    """Appends one JSON object per line to a file; only on process 0, a no-op without a path.

    The file is opened and closed for every record, so a killed run leaves every
    record written before the kill.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = path if path is not None and jax.process_index() == 0 else None

    def write(self, record: dict[str, Any]) -> None:
        """Appends ``record``.

        Args:
          record: JSON-serialisable mapping.
        """
        if self.path is not None:
            with open(self.path, "a") as file:
                file.write(json.dumps(record) + "\n")
