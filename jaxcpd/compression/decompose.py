"""Decomposition of one layer's weights by the method of its :class:`LayerPlan` (section 3, steps 1-2).

Layers with the same method, weight shape and fixed ranks are decomposed together
with ``jax.vmap``; error-bound entries (data-dependent ranks) one at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..decomp import cp_als, cp_intensities, cp_sensitivity, cpd_epc, tkd_cpd, truncated_svd, tucker2
from .plan import CP_METHODS, TKD_METHODS, LayerPlan

# vmap pays off where per-layer overheads dominate; on big layers it only turns the
# loop's lax.cond into a select (both branches every sweep) and batches LAPACK calls
# sequentially anyway, so those are decomposed one at a time.
VMAP_MAX_WORK = 2**22


def layer_tensor(kernel, method: str):
    """The array a method decomposes: ``(D*D, S, T)`` for conv kernels, ``(S, T)`` for SVD."""
    if method == "svd":
        return kernel.reshape(-1, kernel.shape[-1]) if kernel.ndim == 2 else kernel[0, 0]
    return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])


def _rel(x, approx):
    norm = jnp.linalg.norm(x)
    return jnp.linalg.norm(x - approx) / jnp.where(norm > 0, norm, 1.0)


def decomposition_fn(entry: LayerPlan, als_kwargs=None, epc_kwargs=None):
    """``fn(tensor, key) -> dict`` of factor arrays for ``entry``'s method.

    The dict holds the block's arrays (``factors``, ``U``, ``V``, ``core`` as the
    method needs), ``before`` (the CPD before EPC, for CP methods) and ``rel_error``
    of the weight. Fixed-rank entries give a pure function that can be vmapped.
    """
    method = entry.method
    als_kwargs = dict(als_kwargs or {})
    epc_kwargs = dict(epc_kwargs or {})

    def fn(x, key):
        if method in CP_METHODS:
            if method == "cpd-epc":
                res = cpd_epc(x, entry.rank, key=key, als_kwargs=als_kwargs, epc_kwargs=epc_kwargs)
                before, after = res.cpd.factors, res.epc.factors
                rel = res.epc.rel_error
            else:
                res = cp_als(x, entry.rank, key=key, **als_kwargs)
                before = after = res.factors
                rel = res.rel_error
            return {"factors": after, "before": before, "rel_error": rel}
        if method in TKD_METHODS:
            tucker_kwargs = {} if entry.error_bound is None else {"error_bound": entry.error_bound}
            res = tkd_cpd(
                x,
                entry.ranks,
                entry.rank,
                key=key,
                epc=method == "tkd-cpd-epc",
                tucker_kwargs=tucker_kwargs,
                als_kwargs=als_kwargs,
                epc_kwargs=epc_kwargs,
            )
            return {
                "U": res.U,
                "V": res.V,
                "factors": res.factors,
                "before": res.cpd_factors,
                "rel_error": res.rel_error,
            }
        if method == "tucker2":
            res = tucker2(x, entry.ranks, error_bound=entry.error_bound)
            return {"core": res.core, "U": res.U, "V": res.V, "rel_error": res.rel_error}
        u, v = truncated_svd(x, entry.rank, error_bound=entry.error_bound)
        return {"U": u, "V": v, "rel_error": _rel(x, u @ v.T)}

    return fn


def decompose_batch(tensors, keys, entry: LayerPlan, als_kwargs=None, epc_kwargs=None) -> list[dict]:
    """Decomposes a stack of same-shape tensors; vmapped when the ranks are fixed.

    Args:
      tensors: ``(B, ...)`` stacked layer tensors (see :func:`layer_tensor`).
      keys: ``(B,)`` stacked ``jax.random`` keys.
      entry: the shared plan entry.
      als_kwargs, epc_kwargs: options for ``cp_als`` / ``epc``.

    Returns:
      One dict per tensor (see :func:`decomposition_fn`), with host-side metrics
      ``sensitivity_before/after`` and ``max_intensity_before/after`` for CP methods.
    """
    fn = decomposition_fn(entry, als_kwargs, epc_kwargs)
    work = tensors[0].size * (entry.rank or 1)
    if entry.error_bound is None and tensors.shape[0] > 1 and work <= VMAP_MAX_WORK:
        out = jax.vmap(fn)(tensors, keys)
        results = [jax.tree.map(lambda a, i=i: a[i], out) for i in range(tensors.shape[0])]
    else:
        results = [fn(tensors[i], keys[i]) for i in range(tensors.shape[0])]
    for res in results:
        if "before" in res:
            res["sensitivity_before"] = float(cp_sensitivity(res["before"]))
            res["sensitivity_after"] = float(cp_sensitivity(res["factors"]))
            res["max_intensity_before"] = float(jnp.max(cp_intensities(res["before"])))
            res["max_intensity_after"] = float(jnp.max(cp_intensities(res["factors"])))
        res["rel_error"] = float(res["rel_error"])
    return results
