"""The training loop: fine-tuning (paper section 3 step 4, section 4) and training from scratch.

One readable loop in the style of the flax examples. Each step reads this host's
part of the global batch, places it on the ``'data'`` mesh axis, and runs one
jitted update; XLA reduces the gradients and the BatchNorm statistics over the
global batch. Metrics stay on the device between log points.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Generator
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh
from tqdm.auto import tqdm

from .checkpoint import Checkpointer
from .config import SCRATCH_CONFIG, TrainConfig
from .evaluation import evaluate
from .mesh import make_mesh, replicate, shard_batch
from .metrics import JsonlWriter, batch_metrics, summarize
from .optim import current_learning_rate, make_optimizer, trainable_filter


class TrainData(Protocol):
    """What the loop needs from training data (a :class:`jaxcpd.train.Batches` has it)."""

    batch_size: int
    steps_per_epoch: int

    def stream(self, *, seed: int, start_step: int = 0) -> Generator[dict, None, None]: ...


@nnx.jit
def train_step(model: nnx.Module, optimizer: nnx.Optimizer, batch: dict[str, jax.Array]) -> dict[str, Any]:
    """One update of the parameters ``optimizer.wrt`` selects, on the mean loss of ``batch``.

    Args:
      model: the model, in training mode (BatchNorm uses and updates batch statistics).
      optimizer: its optimizer.
      batch: ``image``, ``label`` and ``mask`` arrays.

    Returns:
      Summed metrics of the batch (see :func:`jaxcpd.train.metrics.batch_metrics`).
    """

    def loss_fn(model):
        sums = batch_metrics(model(batch["image"]), batch["label"], batch["mask"])
        return sums["loss"] / jnp.maximum(sums["count"], 1), sums

    grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, optimizer.wrt), has_aux=True)
    (loss, sums), grads = grad_fn(model)
    optimizer.update(model, grads, value=loss)
    return sums


def finetune(
    model: nnx.Module,
    train_data: TrainData,
    eval_data: Any = None,
    config: TrainConfig = TrainConfig(),  # noqa: B008 - frozen, so a shared default is safe
    *,
    mesh: Mesh | None = None,
) -> tuple[nnx.Module, list[dict[str, Any]]]:
    """Trains ``model`` in place on every device of ``mesh`` and returns it with its history.

    Args:
      model: any NNX module mapping NHWC images to logits; BatchNorm and dropout
        layers are switched to training mode for the updates and back for evaluation.
      train_data: training batches, e.g. ``jaxcpd.data.load(name, "train", batch_size=...)``.
        Its ``batch_size`` is global and must be a multiple of the number of devices.
      eval_data: evaluation batches (iterated once per evaluation), or ``None``.
      config: the recipe; the default is the paper's fine-tuning recipe.
      mesh: device mesh with a ``'data'`` axis; default every device (:func:`make_mesh`).

    Returns:
      ``(model, history)``: the trained model (the same object, switched to evaluation mode)
      and a list of records ``{"kind": "train" | "eval", "step", "epoch", "loss",
      "top1", ...}``, which also go to ``run_dir/metrics.jsonl``. A resumed run's
      history starts with the records of the run it continues, up to its checkpoint;
      in the file, a ``{"kind": "resume", "step": k}`` line marks the restart (lines
      of the killed run after step ``k`` are superseded by the ones that follow).

    Raises:
      ValueError: if the batch size does not split over the devices, a ``trainable``
        prefix matches nothing, or a resumed checkpoint was made with another seed or batch size.
      CheckpointError: if ``resume`` finds checkpoints but none restores.
    """
    mesh = make_mesh() if mesh is None else mesh
    if train_data.batch_size % mesh.size:
        raise ValueError(
            f"train_data: batch_size {train_data.batch_size} does not split over the {mesh.size} devices"
        )
    steps_per_epoch = train_data.steps_per_epoch
    total_steps = config.total_steps(steps_per_epoch)
    eval_every = config.eval_every or steps_per_epoch
    checkpoint_every = config.checkpoint_every or eval_every

    replicate(model, mesh)
    train_model = nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)
    optimizer = nnx.Optimizer(
        train_model, make_optimizer(config, steps_per_epoch), wrt=trainable_filter(model, config.trainable)
    )
    replicate(optimizer, mesh)

    run_info = {"seed": config.seed, "batch_size": train_data.batch_size}
    checkpoints, history, start = None, [], 0
    if config.run_dir is not None:
        os.makedirs(config.run_dir, exist_ok=True)
        checkpoints = Checkpointer(os.path.join(config.run_dir, "checkpoints"), keep=config.keep_checkpoints)
    writer = JsonlWriter(None if config.run_dir is None else os.path.join(config.run_dir, "metrics.jsonl"))
    if config.resume and (meta := checkpoints.restore_latest(model, optimizer)) is not None:
        for key, value in run_info.items():
            if meta[key] != value:
                raise ValueError(f"resume: checkpoint made with {key}={meta[key]}, this run has {value}")
        start, history = meta["data_position"], meta["history"]
        writer.write({"kind": "resume", "step": start})

    step_fn = nnx.cached_partial(train_step, train_model, optimizer)
    batches = train_data.stream(seed=config.seed, start_step=start)
    sums, clock, images = None, time.perf_counter(), 0

    def record(kind: str, step: int, values: dict[str, float]) -> None:
        entry = {"kind": kind, "step": step, "epoch": round(step / steps_per_epoch, 4), **values}
        history.append(entry)
        writer.write(entry)

    bar = tqdm(total=total_steps, initial=start, disable=not config.progress or jax.process_index() != 0)
    try:
        for step in range(start + 1, total_steps + 1):
            step_sums = step_fn(shard_batch(next(batches), mesh))
            sums = step_sums if sums is None else jax.tree.map(jnp.add, sums, step_sums)
            images += train_data.batch_size
            bar.update()

            if step % config.log_every == 0 or step == total_steps:
                values = summarize(sums)  # waits for the device
                learning_rate = current_learning_rate(config, optimizer, steps_per_epoch)
                throughput = images / (time.perf_counter() - clock)
                record("train", step, {**values, "lr": learning_rate, "images_per_sec": throughput})
                bar.set_postfix(loss=f"{values['loss']:.4f}", top1=f"{values['top1']:.3f}", lr=learning_rate)
                sums, clock, images = None, time.perf_counter(), 0
            paused_at = time.perf_counter()
            if eval_data is not None and (step % eval_every == 0 or step == total_steps):
                values = evaluate(model, eval_data, mesh=mesh)
                record("eval", step, values)
                bar.write(f"step {step}: eval " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            if checkpoints is not None and (step % checkpoint_every == 0 or step == total_steps):
                config_dict = dataclasses.asdict(config)
                meta = {**run_info, "data_position": step, "history": history, "config": config_dict}
                checkpoints.save(step, model, optimizer, meta)
            clock += time.perf_counter() - paused_at  # throughput excludes evaluation and checkpointing
    finally:  # also on Ctrl-C: finish the pending checkpoint, stop the reader threads
        batches.close()
        bar.close()
        if checkpoints is not None:
            checkpoints.close()
    model.eval()
    return model, history


def train_from_scratch(
    model: nnx.Module,
    train_data: TrainData,
    eval_data: Any = None,
    config: TrainConfig = SCRATCH_CONFIG,
    *,
    mesh: Mesh | None = None,
) -> tuple[nnx.Module, list[dict[str, Any]]]:
    """:func:`finetune` with a from-scratch recipe by default (:data:`SCRATCH_CONFIG`).

    Use it on a freshly initialised model to produce a baseline, e.g.
    ``train_from_scratch(model, data, test, dataclasses.replace(SCRATCH_CONFIG, epochs=5))``.

    Args:
      model: a freshly initialised NNX classifier.
      train_data: training batches.
      eval_data: evaluation batches or ``None``.
      config: the recipe; default :data:`SCRATCH_CONFIG`.
      mesh: device mesh; default every device.

    Returns:
      ``(model, history)`` as :func:`finetune`.
    """
    return finetune(model, train_data, eval_data, config, mesh=mesh)
