"""One experiment end to end: baseline, plan, compress, fine-tune, measure (paper section 3, steps 1-4).

:func:`run_experiment` takes an :class:`~jaxcpd.experiments.config.ExperimentConfig`
and writes a run directory::

    RUN_DIR/config.yaml              the resolved config
    RUN_DIR/summary.json, summary.md the comparison table (see :mod:`.summary`)
    RUN_DIR/summary.png              accuracy, sensitivity per layer, fine-tuning curves
    RUN_DIR/baseline/model/          the dense model (``jaxcpd.load_compressed`` reads it)
    RUN_DIR/baseline/train/          baseline training metrics and checkpoints, if it was trained
    RUN_DIR/<method>/report.{md,json,csv}   the per-layer compression report
    RUN_DIR/<method>/model/          the fine-tuned compressed model
    RUN_DIR/<method>/finetune/       fine-tuning metrics and checkpoints
    RUN_DIR/<method>/rank_search.json, RUN_DIR/rank_search.png   with strategy rank_search
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from .. import data as data_lib
from ..compression import (
    build_model,
    candidate_layers,
    compress,
    load_compressed,
    load_plan,
    plan_for_flops,
    plan_from_vbmf,
    plan_uniform,
    save_compressed,
)
from ..compression.plan import TKD_METHODS
from ..decomp import kernel_to_tensor, tucker2
from ..models import get_submodule, load_torchvision
from ..nn import CPConv, SVDConv, SVDDense, TKDCPConv, Tucker2Conv
from ..train import TrainConfig, evaluate, finetune
from .config import ExperimentConfig, save_config
from .rank_search import rank_bounds, rank_search, single_layer_probe
from .summary import MethodResult, RunSummary, render_run


def _arch(config: ExperimentConfig) -> dict:
    info = data_lib.dataset_info(config.data.name)
    m = config.model
    arch = {
        "name": m.arch,
        "num_classes": m.num_classes or info.num_classes,
        "in_channels": m.in_channels or info.image_shape[-1],
    }
    if m.arch == "vgg16":
        arch["batch_norm"] = m.batch_norm
    else:
        arch.update(small_input=m.small_input, width=m.width)
    return arch


def load_base_model(config: ExperimentConfig) -> tuple[nnx.Module, dict]:
    """The dense model of a config (random init, or its ``model.weights``) and its arch spec."""
    arch = _arch(config)
    weights = config.model.weights
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"model.weights: file not found: {path}")
        if path.is_dir():
            model = load_compressed(path)
            if _has_compressed_layers(model):
                raise ValueError(f"model.weights: {path} holds a compressed model; give the dense one")
            return model, arch
    model = build_model(arch, seed=config.seed)
    if weights is not None:
        load_torchvision(model, weights)
    return model, arch


def _has_compressed_layers(model) -> bool:
    blocks = (CPConv, SVDConv, SVDDense, TKDCPConv, Tucker2Conv)
    return any(isinstance(m, blocks) for _, m in nnx.iter_graph(model))


def load_data(config: ExperimentConfig):
    """``(train, eval)`` batches of the config's data set."""
    d = config.data
    train = data_lib.load(d.name, d.train_split, batch_size=d.batch_size, data_dir=d.data_dir)
    test = data_lib.load(
        d.name, d.eval_split, batch_size=d.eval_batch_size, data_dir=d.data_dir, augment=False
    )
    return train, test


def forward_ms(model: nnx.Module, images, repeats: int) -> float:
    """Median wall time in ms of the jitted evaluation-mode forward pass on ``images``."""
    view = nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)
    graphdef, state = nnx.split(view)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = jax.numpy.asarray(images)
    jax.block_until_ready(forward(state, x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(forward(state, x))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _tucker_ranks(model, layers, bound: float) -> dict[str, tuple[int, int]]:
    out = {}
    for name in layers:
        kernel = get_submodule(model, name).kernel[...]
        result = tucker2(kernel_to_tensor(kernel), error_bound=bound)
        out[name] = (int(result.U.shape[1]), int(result.V.shape[1]))
    return out


def make_plan(
    model,
    method: str,
    config: ExperimentConfig,
    input_shape,
    *,
    run_dir: Path,
    train,
    test,
    baseline_top1: float,
    progress: bool,
):
    """The plan of one method under the config's strategy; also the rank search result if one ran."""
    c = config.compression
    rules = {"include_first": c.include_first, "include_fc": c.include_fc, "one_by_one": c.one_by_one}
    search = None
    if c.strategy == "flops":
        plan = plan_for_flops(model, input_shape, c.target_reduction, method, **rules)
    elif c.strategy == "uniform":
        plan = plan_uniform(model, method, c.rank_ratio, **rules)
    elif c.strategy == "vbmf":
        plan = plan_from_vbmf(model, method, rank_scale=c.rank_scale, **rules)
    elif c.strategy == "plan":
        plan = load_plan(c.plan)
    else:
        plan, search = _searched_plan(
            model,
            method,
            config,
            rules,
            run_dir=run_dir,
            train=train,
            test=test,
            baseline_top1=baseline_top1,
            progress=progress,
        )
    if c.layers:
        unknown = sorted(set(c.layers) - set(plan))
        if unknown:
            raise ValueError(f"compression.layers: not planned layers {unknown}; planned: {sorted(plan)}")
        plan = {name: entry for name, entry in plan.items() if name in c.layers}
    return plan, search


def _searched_plan(model, method, config, rules, *, run_dir, train, test, baseline_top1, progress):
    """Section 3's rank search: per layer, the smallest rank within ``eps`` after fine-tuning."""
    c = config.compression
    names = [n for n, _ in candidate_layers(model, **rules) if not c.layers or n in c.layers]
    by_method: dict[str, list[str]] = {}
    for name in names:
        conv = get_submodule(model, name)
        single = conv.kernel.ndim == 2 or conv.kernel.shape[:-2] == (1, 1)
        by_method.setdefault("svd" if single else method, []).append(name)
    tucker = (
        _tucker_ranks(model, by_method.get(method, []), c.tucker_error_bound) if method in TKD_METHODS else {}
    )
    probe_config = dataclasses.replace(config.finetune, run_dir=None, resume=False, progress=False)
    plan, results = {}, {}
    for layer_method, layers in by_method.items():
        bounds = rank_bounds(model, layers, layer_method, tucker_ranks=tucker or None)
        probe = single_layer_probe(
            model,
            train,
            test,
            method=layer_method,
            steps=c.search_steps,
            config=probe_config,
            key=jax.random.key(config.seed),
            tucker_ranks=tucker or None,
            compress_kwargs={"als_kwargs": c.als, "epc_kwargs": c.epc},
        )
        cache = run_dir / f"rank_search_{layer_method}.cache.json"
        if not config.resume:
            cache.unlink(missing_ok=True)
        result = rank_search(
            probe,
            bounds,
            baseline=baseline_top1,
            eps=c.eps,
            progress=progress,
            cache=cache,
            tag=f"{layer_method}/steps={c.search_steps}/seed={config.seed}",
        )
        plan.update(result.to_plan(layer_method, tucker_ranks=tucker or None))
        results[layer_method] = result
    return plan, results


def _train_config(config: ExperimentConfig, train_config: TrainConfig, run_dir: Path, progress: bool):
    """The section's training config with the experiment's run directory, seed and resume flag."""
    if not config.resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    fields = {f.name: getattr(train_config, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(
        **{
            **fields,
            "run_dir": str(run_dir),
            "seed": config.seed,
            "resume": config.resume,
            "progress": progress and train_config.progress,
        }
    )


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def run_experiment(
    config: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] = print
) -> RunSummary:
    """Runs an experiment and writes its run directory (see the module docstring).

    Args:
      config: the experiment.
      progress: progress bars for training, compression and search.
      log: where one-line status messages go.

    Returns:
      The :class:`~jaxcpd.experiments.summary.RunSummary` also saved as ``summary.json``.
    """
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    started = time.perf_counter()
    train, test = load_data(config)
    info = data_lib.dataset_info(config.data.name)
    input_shape = (1, *info.image_shape)
    if config.model.small_input is False and config.model.arch != "vgg16" and info.image_shape[0] < 64:
        log("note: model.small_input is false for small images; the ImageNet stem downsamples 4x")
    log(f"building {config.model.arch} for {config.data.name} ...")
    model, arch = load_base_model(config)

    baseline_seconds = 0.0
    if config.baseline.train:
        log("training the dense baseline ...")
        start = time.perf_counter()
        fields = {f.name: getattr(config.baseline, f.name) for f in dataclasses.fields(TrainConfig)}
        base_config = dataclasses.replace(
            TrainConfig(**fields),
            run_dir=str(run_dir / "baseline"),
            seed=config.seed,
            progress=progress and config.baseline.progress,
        )
        model, _ = finetune(model, train, test, base_config)
        baseline_seconds = time.perf_counter() - start
    base_metrics = evaluate(model, test)
    base_dir = run_dir / "baseline" / "model"
    shutil.rmtree(base_dir, ignore_errors=True)
    save_compressed(base_dir, model, {}, arch=arch)
    speed_images = next(
        iter(
            data_lib.load(
                config.data.name,
                config.data.eval_split,
                batch_size=config.speed.batch_size,
                data_dir=config.data.data_dir,
                augment=False,
            )
        )
    )["image"]
    dense_ms = forward_ms(model, speed_images, config.speed.repeats) if config.speed.repeats else None
    log(f"dense model: top-1 {base_metrics['top1']:.4f}")

    search_test = test
    if config.compression.search_eval_batches is not None:
        search_test = list(itertools.islice(iter(test), config.compression.search_eval_batches))
    search_top1 = None
    if config.compression.strategy == "rank_search":
        search_top1 = (
            evaluate(model, search_test)["top1"] if search_test is not test else base_metrics["top1"]
        )

    results = []
    for index, method in enumerate(config.compression.methods):
        method_dir = run_dir / method
        method_dir.mkdir(exist_ok=True)
        log(f"[{index + 1}/{len(config.compression.methods)}] {method}: planning ...")
        plan, search = make_plan(
            model,
            method,
            config,
            input_shape,
            run_dir=method_dir,
            train=train,
            test=search_test,
            baseline_top1=search_top1,
            progress=progress,
        )
        for layer_method, result in (search or {}).items():
            (method_dir / f"rank_search_{layer_method}.json").write_text(_json(result.to_dict()))
        log(f"[{index + 1}/{len(config.compression.methods)}] {method}: decomposing {len(plan)} layers ...")
        start = time.perf_counter()
        compressed, report = compress(
            model,
            plan,
            key=jax.random.key(config.seed),
            input_shape=input_shape,
            progress=progress,
            als_kwargs=config.compression.als or None,
            epc_kwargs=config.compression.epc or None,
        )
        decompose_seconds = time.perf_counter() - start
        report.save_json(method_dir / "report.json")
        before = evaluate(compressed, test)
        log(
            f"[{index + 1}/{len(config.compression.methods)}] {method}: top-1 {before['top1']:.4f} "
            f"before fine-tuning; fine-tuning ..."
        )
        start = time.perf_counter()
        ft_config = _train_config(config, config.finetune, method_dir / "finetune", progress)
        compressed, _ = finetune(compressed, train, test, ft_config)
        finetune_seconds = time.perf_counter() - start
        after = evaluate(compressed, test)
        shutil.rmtree(method_dir / "model", ignore_errors=True)
        save_compressed(method_dir / "model", compressed, report.concrete_plan(), arch=arch)
        compressed_ms = forward_ms(compressed, speed_images, config.speed.repeats) if dense_ms else None
        rows = report.layers
        results.append(
            MethodResult(
                method=method,
                layers=len(rows),
                params_reduction=report.params_reduction,
                flops_reduction=report.flops_reduction,
                top1_before_finetune=before["top1"],
                top1=after["top1"],
                top5=after["top5"],
                mean_rel_error=_mean(r.rel_error for r in rows),
                mean_sensitivity_cpd=_mean(r.sensitivity_before for r in rows),
                mean_sensitivity=_mean(r.sensitivity_after for r in rows),
                mean_max_intensity=_mean(r.max_intensity_after for r in rows),
                decompose_seconds=decompose_seconds,
                finetune_seconds=finetune_seconds,
                forward_ms=compressed_ms,
                speedup=dense_ms / compressed_ms if compressed_ms else None,
            )
        )
        log(
            f"[{index + 1}/{len(config.compression.methods)}] {method}: top-1 {after['top1']:.4f} "
            f"after fine-tuning, FLOPs {report.flops_reduction:.2f}x fewer"
        )
    summary = RunSummary(
        name=config.name,
        data=config.data.name,
        arch=arch,
        input_shape=input_shape,
        params=sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param))),
        top1=base_metrics["top1"],
        top5=base_metrics["top5"],
        baseline_seconds=baseline_seconds,
        forward_ms=dense_ms,
        speed_batch=config.speed.batch_size,
        methods=results,
        seconds=time.perf_counter() - started,
    )
    summary.save(run_dir)
    render_run(run_dir)
    return summary


def _json(data) -> str:
    return json.dumps(data, indent=2) + "\n"
