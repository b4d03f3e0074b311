"""Decomposition of one layer's weights by the method of its :class:`LayerPlan` (section 3, steps 1-2).

Each layer runs the public decomposition functions (``cp_als``, ``cpd_epc``, ``tkd_cpd``,
...), whose programs are compiled once per shape and ranks and carry their own compiler
options, plus one metrics program: every layer of a shape, and every method that shares a
step (CPD and CPD-EPC share the ALS programs), reuses them. Small layers of equal shape
are ``jax.vmap``-ed together, at top level, so the batched programs are shared the same
way. Until 2026-11-30 each group ran one outer ``jit`` that inlined everything and so
shared nothing: the demo's three decompositions took 200 s with a cold cache, now 165 s
(``docs/performance.md``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..decomp import cp_als, cp_intensities, cp_sensitivity, cpd_epc, tkd_cpd, truncated_svd, tucker2
from .plan import CP_METHODS, TKD_METHODS, LayerPlan

# A vmapped group runs every layer for as many sweeps as its slowest, turns the loops'
# lax.cond into selects (both branches every sweep) and batches the LAPACK calls
# sequentially; it pays off only where per-layer overheads dominate. Measured per
# three-to-four-layer group of the demo (CPD-EPC, 2026-11-30): vmapped 35 / 88 ms against
# one at a time 61 / 110 ms at work 3.7e4 / 3.4e5 ((9,16,16) R=16, (9,32,32) R=37), but
# 418 / 1,780 ms against 341 / 1,509 ms at 2.9e6 / 2.4e7 ((9,64,64) R=79, (9,128,128) R=163).
VMAP_MAX_WORK = 2**20


def layer_tensor(kernel, method: str):
    """The array a method decomposes: ``(D*D, S, T)`` for conv kernels, ``(S, T)`` for SVD."""
    if method == "svd":
        return kernel.reshape(-1, kernel.shape[-1]) if kernel.ndim == 2 else kernel[0, 0]
    return kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])


@jax.jit
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


@jax.jit
def _cp_metrics(factors):
    """Eq. 5 and the largest intensity of one CPD, as one program per factor shapes."""
    return cp_sensitivity(factors), jnp.max(cp_intensities(factors))


def _with_metrics(fn):
    """``fn`` plus the sensitivity (eq. 5) and max intensity of the CPD before and after EPC
    (computed once when the method has no EPC step and both are the same factors)."""

    def wrapped(x, key):
        out = fn(x, key)
        if "before" in out:
            after = _cp_metrics(out["factors"])
            before = after if out["before"] is out["factors"] else _cp_metrics(out["before"])
            for when, (sens, peak) in (("before", before), ("after", after)):
                out[f"sensitivity_{when}"], out[f"max_intensity_{when}"] = sens, peak
        return out

    return wrapped


_FLOATS = ("rel_error", *(f"{m}_{w}" for m in ("sensitivity", "max_intensity") for w in ("before", "after")))


def _to_layer(out: dict) -> dict:
    """Host floats for the metrics, JAX arrays for the factors."""
    return {k: float(v) if k in _FLOATS else jax.tree.map(jnp.asarray, v) for k, v in out.items()}


def decompose_batch(tensors, keys, entry: LayerPlan, als_kwargs=None, epc_kwargs=None) -> list[dict]:
    """Decomposes a stack of same-shape tensors with the public decomposition functions.

    Fixed-rank entries of small layers are ``jax.vmap``-ed over the stack (per-layer
    overheads dominate there, see ``VMAP_MAX_WORK``); other layers, and error-bound
    entries (data-dependent ranks), run one at a time. The vmap is at top level, so each
    function's program is compiled batched on its own and shared with every other group
    and method of the same shapes. The results are fetched in one transfer. Non-finite
    tensors raise ``ValueError``.

    Args:
      tensors: ``(B, ...)`` stacked layer tensors (see :func:`layer_tensor`).
      keys: ``(B,)`` stacked ``jax.random`` keys.
      entry: the shared plan entry.
      als_kwargs, epc_kwargs: options for ``cp_als`` / ``epc``.

    Returns:
      One dict per tensor (see :func:`decomposition_fn`), with host-side metrics
      ``sensitivity_before/after`` and ``max_intensity_before/after`` for CP methods.
    """
    host = np.asarray(tensors)
    for i in range(host.shape[0]):
        if not np.all(np.isfinite(host[i])):
            raise ValueError(f"tensors[{i}] contains NaN or Inf")
    count = host.shape[0]
    fn = _with_metrics(decomposition_fn(entry, als_kwargs, epc_kwargs))
    work = host[0].size * (entry.rank or 1)
    if entry.error_bound is None and count > 1 and work <= VMAP_MAX_WORK:
        out = jax.device_get(jax.vmap(fn)(jnp.asarray(host), keys))
        return [_to_layer(jax.tree.map(lambda a, i=i: a[i], out)) for i in range(count)]
    return [_to_layer(out) for out in jax.device_get([fn(host[i], keys[i]) for i in range(count)])]
