"""Plan builders: uniform rank ratio, a whole-model FLOP target, and EVBMF ranks (as MUSCO).

Default rules (paper section 3): ``D x D`` convs get the chosen CP-type method,
1x1 convs get SVD, the first conv and dense layers are kept unless asked for.
"""

from __future__ import annotations

import math

from flax import nnx

from ..decomp._checks import check_positive_int
from ..decomp.vbmf import evbmf_rank
from ..models import named_convs, named_modules
from ..nn import count_flops, merge_plan
from .plan import CP_METHODS, METHODS, TKD_METHODS, LayerPlan
from .surgery import default_input_shape

ONE_BY_ONE = ("svd", "keep")


def _check_method(method: str) -> str:
    allowed = tuple(m for m in METHODS if m not in ("svd", "keep"))
    if method not in allowed:
        raise ValueError(f"method must be one of {allowed}, got {method!r}")
    return method


def _check_ratio(value, name: str) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def candidate_layers(model, *, include_first=False, include_fc=False, one_by_one="svd"):
    """``(name, module)`` of the layers a default plan compresses.

    Args:
      model: an NNX model.
      include_first: also compress the first conv (the stem).
      include_fc: also factorise dense layers (``svd``).
      one_by_one: ``"svd"`` to compress 1x1 convs, ``"keep"`` to leave them.

    Returns:
      A list of ``(name, nnx.Conv | nnx.Linear)`` in forward order.
    """
    if one_by_one not in ONE_BY_ONE:
        raise ValueError(f"one_by_one must be one of {ONE_BY_ONE}, got {one_by_one!r}")
    convs = [(n, m) for n, m in named_convs(model) if isinstance(m, nnx.Conv)]
    out = []
    for i, (name, conv) in enumerate(convs):
        if i == 0 and not include_first:
            continue
        if tuple(conv.kernel_size) == (1, 1) and one_by_one == "keep":
            continue
        if conv.feature_group_count != 1:
            continue
        out.append((name, conv))
    if include_fc:
        out += [(n, m) for n, m in named_modules(model) if isinstance(m, nnx.Linear)]
    return out


def _ranks_for_ratio(method: str, kernel_shape, ratio: float) -> LayerPlan:
    """Ranks whose block keeps about ``ratio`` of the layer's weights."""
    if len(kernel_shape) == 2:
        s, t = kernel_shape
        d2 = 1
    else:
        *spatial, s, t = kernel_shape
        d2 = math.prod(spatial)
    budget = ratio * d2 * s * t
    if d2 == 1:
        return LayerPlan("svd", rank=max(1, min(round(budget / (s + t)), s, t)))
    if method in CP_METHODS:
        return LayerPlan(method, rank=max(1, round(budget / (d2 + s + t))))
    # Tucker ranks proportional to the channel counts: r1/S = r2/T = g, with the weights
    # S r1 + d2 r1 r2 + r2 T = g (S² + T²) + g² d2 S T equal to the budget ratio d2 S T.
    quad, lin = d2 * s * t, s * s + t * t
    g = (-lin + math.sqrt(lin * lin + 4 * quad * budget)) / (2 * quad)
    if method == "tucker2":
        return LayerPlan(method, ranks=(max(1, min(round(g * s), s)), max(1, min(round(g * t), t))))
    # TKD-CPD: half of the budget's channel reduction in the Tucker factors, the CP
    # rank filling the rest, kept above both Tucker ranks (section 3).
    r1, r2 = max(1, min(round(g * s), s)), max(1, min(round(g * t), t))
    rank = max(1, round((budget - s * r1 - r2 * t) / (r1 + d2 + r2)))
    while rank <= max(r1, r2) and (r1 > 1 or r2 > 1):
        r1, r2 = max(1, r1 - max(1, r1 // 8)), max(1, r2 - max(1, r2 // 8))
        rank = max(1, round((budget - s * r1 - r2 * t) / (r1 + d2 + r2)))
    return LayerPlan(method, rank=rank, ranks=(r1, r2))


def plan_uniform(
    model, method: str, rank_ratio: float = 1 / 3, *, include_first=False, include_fc=False, one_by_one="svd"
) -> dict[str, LayerPlan]:
    """Every candidate layer keeps about ``rank_ratio`` of its weights.

    Args:
      model: an NNX model.
      method: method for ``D x D`` convs (``cpd``, ``cpd-epc``, ``tkd-cpd``,
        ``tkd-cpd-epc``, ``tucker2``); 1x1 convs and dense layers get ``svd``.
      rank_ratio: fraction of each layer's weights the block keeps, in (0, 1).
      include_first, include_fc, one_by_one: see :func:`candidate_layers`.

    Returns:
      ``dict[str, LayerPlan]``.
    """
    method = _check_method(method)
    rank_ratio = _check_ratio(rank_ratio, "rank_ratio")
    layers = candidate_layers(
        model, include_first=include_first, include_fc=include_fc, one_by_one=one_by_one
    )
    return {name: _ranks_for_ratio(method, m.kernel.shape, rank_ratio) for name, m in layers}


def _stride(module) -> int:
    if isinstance(module, nnx.Linear) or module.strides is None:
        return 1
    strides = module.strides
    return max(strides) if isinstance(strides, tuple | list) else int(strides)


def _block_flops(entry: LayerPlan, kernel_shape, dense_flops: int, stride: int) -> int:
    """Multiply-adds of an entry's block, from the dense layer's count (same output size)."""
    if len(kernel_shape) == 2:
        return dense_flops * entry.rank * sum(kernel_shape) // math.prod(kernel_shape)
    *spatial, s, t = kernel_shape
    d2 = math.prod(spatial)
    out_px = dense_flops / (d2 * s * t)
    in_px = out_px * stride * stride
    if entry.method == "svd":
        return round(out_px * entry.rank * (s + t))
    if entry.method == "tucker2":
        r1, r2 = entry.ranks
        return round(in_px * s * r1 + out_px * (d2 * r1 * r2 + r2 * t))
    if entry.method in TKD_METHODS:
        r1, r2 = entry.ranks
        merged_in, merged_out = merge_plan(s, t, entry.rank, entry.ranks, None)
        head = s * entry.rank if merged_in else s * r1 + r1 * entry.rank
        tail = entry.rank * t if merged_out else entry.rank * r2 + r2 * t
        return round(in_px * head + out_px * (d2 * entry.rank + tail))
    return round(in_px * s * entry.rank + out_px * entry.rank * (d2 + t))


def plan_for_flops(
    model,
    input_shape=None,
    target_reduction: float = 3.0,
    method: str = "cpd-epc",
    *,
    include_first=False,
    include_fc=False,
    one_by_one="svd",
) -> dict[str, LayerPlan]:
    """A uniform-ratio plan whose whole model has ``target_reduction`` times fewer FLOPs.

    Bisects the rank ratio of :func:`plan_uniform` against the model's multiply-adds
    (layers outside the plan count at full cost).

    Args:
      model: an NNX model.
      input_shape: input shape for counting (default: 224x224, or 32x32 for small-input ports).
      target_reduction: ``FLOPs(model) / FLOPs(compressed)``, > 1.
      method, include_first, include_fc, one_by_one: as in :func:`plan_uniform`.

    Returns:
      ``dict[str, LayerPlan]``.
    """
    method = _check_method(method)
    target_reduction = float(target_reduction)
    if not target_reduction > 1.0:
        raise ValueError(f"target_reduction must be > 1, got {target_reduction}")
    input_shape = default_input_shape(model) if input_shape is None else tuple(input_shape)
    dense = count_flops(model, input_shape, by_layer=True)
    total = sum(dense.values())
    layers = candidate_layers(
        model, include_first=include_first, include_fc=include_fc, one_by_one=one_by_one
    )
    fixed = total - sum(dense.get(name, 0) for name, _ in layers)
    goal = total / target_reduction
    if fixed >= goal:
        raise ValueError(
            f"target_reduction {target_reduction} is unreachable: the layers outside the plan alone "
            f"cost {fixed:,} of {total:,} multiply-adds"
        )

    def plan_and_flops(ratio):
        plan, flops = {}, fixed
        for name, m in layers:
            entry = _ranks_for_ratio(method, m.kernel.shape, ratio)
            plan[name] = entry
            flops += _block_flops(entry, m.kernel.shape, dense.get(name, 0), _stride(m))
        return plan, flops

    lo, hi = 1e-4, 0.999
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if plan_and_flops(mid)[1] > goal:
            hi = mid
        else:
            lo = mid
    return plan_and_flops(lo)[0]


def plan_from_vbmf(
    model,
    method: str = "tkd-cpd-epc",
    *,
    include_first=False,
    include_fc=False,
    one_by_one="svd",
    rank_scale: float = 1.0,
) -> dict[str, LayerPlan]:
    """Ranks from EVBMF of the kernel unfoldings, as MUSCO does.

    Tucker-2 ranks ``(R1, R2)`` are the EVBMF ranks of the input- and output-channel
    unfoldings of each kernel; the CP rank (CP and TKD-CPD methods) is
    ``max(R1, R2)`` (a CP rank is at least every multilinear rank); SVD ranks are
    EVBMF of the 1x1 kernel or dense weight.

    Args:
      model: an NNX model.
      method: method for ``D x D`` convs.
      include_first, include_fc, one_by_one: see :func:`candidate_layers`.
      rank_scale: multiplies every estimated rank (MUSCO's weakening), > 0.

    Returns:
      ``dict[str, LayerPlan]``.
    """
    method = _check_method(method)
    rank_scale = float(rank_scale)
    if not rank_scale > 0:
        raise ValueError(f"rank_scale must be > 0, got {rank_scale}")
    plan = {}
    for name, m in candidate_layers(
        model, include_first=include_first, include_fc=include_fc, one_by_one=one_by_one
    ):
        kernel = m.kernel[...]
        s, t = kernel.shape[-2:]

        def scaled(r, upper):
            return check_positive_int(max(1, min(round(r * rank_scale), upper)), "rank")

        if kernel.ndim == 2 or kernel.shape[:2] == (1, 1):
            w = kernel.reshape(s, t)
            plan[name] = LayerPlan("svd", rank=scaled(evbmf_rank(w), min(s, t)))
            continue
        k = kernel.reshape(-1, s, t)
        r1 = scaled(evbmf_rank(k.transpose(1, 0, 2).reshape(s, -1)), s)
        r2 = scaled(evbmf_rank(k.transpose(2, 0, 1).reshape(t, -1)), t)
        if method == "tucker2":
            plan[name] = LayerPlan(method, ranks=(r1, r2))
        elif method in TKD_METHODS:
            plan[name] = LayerPlan(method, rank=max(r1, r2), ranks=(r1, r2))
        else:
            plan[name] = LayerPlan(method, rank=max(r1, r2))
    return plan
