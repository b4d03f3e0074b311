"""Model surgery: replace planned convs (and dense layers) by low-rank blocks (section 3, steps 1-3)."""

from __future__ import annotations

import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from ..decomp._checks import check_key
from ..models import get_submodule, set_submodule
from ..nn import (
    CPConv,
    SVDConv,
    SVDDense,
    TKDCPConv,
    Tucker2Conv,
    conv_config,
    count_flops,
    count_params,
    merge_plan,
)
from .decompose import decompose_batch, layer_tensor
from .plan import CP_METHODS, TKD_METHODS, LayerPlan, plan_from_dict
from .report import CompressionReport, LayerReport

ON_GROWTH = ("warn", "error", "ignore")
# Defaults for compressing whole networks: enough sweeps for the errors to settle on
# trained kernels while keeping ResNet-18 within minutes on a CPU (README benchmark).
DEFAULT_ALS = {"max_iter": 200, "tol": 1e-5}
DEFAULT_EPC = {"max_iter": 50, "tol": 1e-4}


def default_input_shape(model) -> tuple[int, int, int, int]:
    """``(1, H, W, C)`` for FLOP counting: 32x32 for small-input ports, else 224x224."""
    channels = int(getattr(model, "in_channels", 3))
    size = 32 if getattr(model, "small_input", False) else 224
    return (1, size, size, channels)


def _weights(module):
    kernel = module.kernel[...]
    bias = None if module.bias is None else module.bias[...]
    return kernel, bias


def check_target(name: str, module, entry: LayerPlan) -> None:
    if isinstance(module, nnx.Linear):
        if entry.method != "svd":
            raise ValueError(f"layer {name!r} is a dense layer: only 'svd' applies, got {entry.method!r}")
        return
    if not isinstance(module, nnx.Conv):
        raise ValueError(
            f"layer {name!r} is a {type(module).__name__}, not an nnx.Conv or nnx.Linear; "
            "only convolutions (and dense layers with 'svd') can be compressed"
        )
    config = conv_config(module)  # rejects grouped / input-dilated / masked convs
    one_by_one = config["kernel_size"] == (1, 1)
    if entry.method == "svd" and not one_by_one:
        raise ValueError(f"layer {name!r}: method 'svd' is for 1x1 convs, got kernel {config['kernel_size']}")
    if entry.method != "svd" and one_by_one:
        raise ValueError(f"layer {name!r} is a 1x1 conv: use method 'svd', not {entry.method!r}")


def planned_params(entry: LayerPlan, kernel_shape) -> int | None:
    """Weights of the block an entry builds (no bias), or ``None`` when ranks come from a bound."""
    *spatial, s, t = kernel_shape
    d2 = math.prod(spatial)
    r, ranks = entry.rank, entry.ranks
    if entry.method in CP_METHODS:
        return r * (d2 + s + t)
    if entry.method == "svd":
        return None if r is None else r * (s + t)
    if ranks is None:
        return None
    r1, r2 = ranks
    if entry.method == "tucker2":
        return s * r1 + d2 * r1 * r2 + r2 * t
    merged_in, merged_out = merge_plan(s, t, r, ranks, None)  # the structure TKDCPConv builds
    head = s * r if merged_in else s * r1 + r1 * r
    tail = r * t if merged_out else r * r2 + r2 * t
    return head + d2 * r + tail


def _growth(name, before, after, on_growth):
    if after is None or after <= before:
        return
    msg = f"layer {name!r}: the planned block has {after} weights, more than the layer's {before}"
    if on_growth == "error":
        raise ValueError(msg + "; lower the ranks, or pass on_growth='warn'")
    if on_growth == "warn":
        warnings.warn(msg, stacklevel=3)


def build_block(module, entry: LayerPlan, arrays: dict, bias):
    if isinstance(module, nnx.Linear):
        return SVDDense.from_factors(arrays["U"], arrays["V"], bias=bias)
    config = conv_config(module)
    if entry.method == "svd":
        return SVDConv.from_factors(arrays["U"], arrays["V"], bias=bias, **config)
    if entry.method in CP_METHODS:
        return CPConv.from_factors(arrays["factors"], bias=bias, **config)
    if entry.method in TKD_METHODS:
        return TKDCPConv.from_factors(arrays["U"], arrays["V"], arrays["factors"], bias=bias, **config)
    return Tucker2Conv.from_factors(arrays["core"], arrays["U"], arrays["V"], bias=bias, **config)


def _as_plan(plan) -> dict[str, LayerPlan]:
    if not isinstance(plan, dict):
        raise ValueError(f"plan must be a dict of layer names to LayerPlan, got {type(plan).__name__}")
    if all(isinstance(v, LayerPlan) for v in plan.values()):
        return dict(plan)
    return plan_from_dict({k: v.to_dict() if isinstance(v, LayerPlan) else v for k, v in plan.items()})


def compress(
    model,
    plan,
    *,
    key=None,
    input_shape=None,
    progress=True,
    on_growth="warn",
    als_kwargs=None,
    epc_kwargs=None,
):
    """Returns a copy of ``model`` with every planned layer replaced by its low-rank block.

    Each planned conv kernel is decomposed by its entry's method (CPD, CPD-EPC,
    Tucker-2, TKD-CPD(-EPC), SVD); layers of equal shape, method and ranks are
    decomposed together in one ``jax.vmap``. The blocks take the convs' strides,
    padding, dilation and bias; BatchNorm and all other modules are copied as they
    are. ``model`` itself is not modified.

    Args:
      model: an NNX model whose layers are reachable by dotted names
        (``jaxcpd.models`` ports, or any model ``get_submodule`` can walk).
      plan: ``dict[str, LayerPlan]`` (or its plain-data form).
      key: ``jax.random`` key for the CPD initialisations (``PRNGKey(0)`` if omitted).
      input_shape: input shape for the FLOP counts (default: :func:`default_input_shape`).
      progress: show a progress bar.
      on_growth: what to do when a block would have more weights than its layer:
        ``"warn"``, ``"error"`` or ``"ignore"``.
      als_kwargs, epc_kwargs: options for ``cp_als`` and ``epc``, merged over
        ``DEFAULT_ALS`` / ``DEFAULT_EPC``.

    Returns:
      ``(compressed_model, report)`` with a :class:`CompressionReport`.
    """
    als_kwargs = {**DEFAULT_ALS, **(als_kwargs or {})}
    epc_kwargs = {**DEFAULT_EPC, **(epc_kwargs or {})}
    plan = _as_plan(plan)
    if on_growth not in ON_GROWTH:
        raise ValueError(f"on_growth must be one of {ON_GROWTH}, got {on_growth!r}")
    input_shape = default_input_shape(model) if input_shape is None else tuple(int(n) for n in input_shape)
    key = check_key(key)
    active = {name: entry for name, entry in plan.items() if entry.method != "keep"}
    modules = {name: get_submodule(model, name) for name in active}
    for name, entry in active.items():
        check_target(name, modules[name], entry)
        kernel_shape = modules[name].kernel.shape
        _growth(name, math.prod(kernel_shape), planned_params(entry, kernel_shape), on_growth)

    groups: dict[tuple, list[str]] = {}
    for name, entry in active.items():
        groups.setdefault((entry, tuple(modules[name].kernel.shape)), []).append(name)
    layer_keys = dict(zip(active, jax.random.split(key, max(len(active), 1)), strict=False))

    compressed = nnx.clone(model)
    results, seconds = {}, {}
    bar = tqdm(total=len(active), desc="decomposing", disable=not progress, unit="layer")
    for (entry, _), names in groups.items():
        start = time.perf_counter()
        tensors = np.stack([layer_tensor(np.asarray(modules[n].kernel[...]), entry.method) for n in names])
        keys = jnp.stack([layer_keys[n] for n in names])
        outs = decompose_batch(tensors, keys, entry, als_kwargs, epc_kwargs)
        elapsed = (time.perf_counter() - start) / len(names)
        for name, out in zip(names, outs, strict=True):
            block = build_block(modules[name], entry, out, _weights(modules[name])[1])
            set_submodule(compressed, name, block)
            results[name], seconds[name] = (out, block), elapsed
            if planned_params(entry, modules[name].kernel.shape) is None:
                _growth(name, math.prod(modules[name].kernel.shape), _block_weights(block), on_growth)
        bar.update(len(names))
        bar.set_postfix(layer=names[-1])
    bar.close()

    flops_before = count_flops(model, input_shape, by_layer=True)
    flops_after = count_flops(compressed, input_shape, by_layer=True)
    rows = []
    for name, entry in active.items():
        out, block = results[name]
        module = modules[name]
        rows.append(
            LayerReport(
                name=name,
                kernel_shape=tuple(module.kernel.shape),
                method=entry.method,
                rank=int(out["U"].shape[1]) if entry.method == "svd" else entry.rank,
                ranks=_found_ranks(entry, out),
                rel_error=out["rel_error"],
                params_before=_module_params(module),
                params_after=_module_params(block),
                flops_before=flops_before.get(name, 0),
                flops_after=flops_after.get(name, 0),
                seconds=seconds[name],
                sensitivity_before=out.get("sensitivity_before"),
                sensitivity_after=out.get("sensitivity_after"),
                max_intensity_before=out.get("max_intensity_before"),
                max_intensity_after=out.get("max_intensity_after"),
                merged=tuple(getattr(block, "merged", ())) or None,
            )
        )
    report = CompressionReport(
        layers=rows,
        input_shape=input_shape,
        params_before=count_params(model),
        params_after=count_params(compressed),
        flops_before=sum(flops_before.values()),
        flops_after=sum(flops_after.values()),
    )
    return compressed, report


def _found_ranks(entry: LayerPlan, out: dict):
    if entry.method in TKD_METHODS or entry.method == "tucker2":
        return (int(out["U"].shape[1]), int(out["V"].shape[1]))
    return None


def _module_params(module) -> int:
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _block_weights(block) -> int:
    bias = getattr(block, "bias", None)
    return _module_params(block) - (0 if bias is None else math.prod(bias.shape))
