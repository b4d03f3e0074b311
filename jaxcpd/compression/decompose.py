"""Decomposition of one layer's weights by the method of its :class:`LayerPlan` (section 3, steps 1-2).

Layers with the same method, weight shape and fixed ranks share one jitted function
that also computes the sensitivity metrics (``jax.vmap``-ed over the stack when the
layers are small, called once per layer otherwise), so a group costs one XLA
compilation and one transfer to the host; error-bound entries (data-dependent ranks)
run eagerly, one at a time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..decomp import cp_als, cp_intensities, cp_sensitivity, cpd_epc, tkd_cpd, truncated_svd, tucker2
from ..decomp._program import jit_options
from .plan import CP_METHODS, TKD_METHODS, LayerPlan

# vmap pays off where per-layer overheads dominate; on big layers it only turns the
# loop's lax.cond into a select (both branches every sweep), makes every layer run as
# many sweeps as the slowest and batches LAPACK calls sequentially anyway, so those
# are decomposed one at a time (by the same compiled function).
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


def _with_metrics(fn):
    """``fn`` plus the sensitivity (eq. 5) and max intensity of the CPD before and after EPC."""

    def wrapped(x, key):
        out = fn(x, key)
        if "before" in out:
            for when, factors in (("before", out["before"]), ("after", out["factors"])):
                out[f"sensitivity_{when}"] = cp_sensitivity(factors)
                out[f"max_intensity_{when}"] = jnp.max(cp_intensities(factors))
        return out

    return wrapped


def _stacked_fn(entry, als_kwargs, epc_kwargs, vmapped):
    fn = _with_metrics(decomposition_fn(entry, als_kwargs, epc_kwargs))
    # The decomposition programs' own compiler options (``decomp/_program.py``), which the
    # programs inlined into this one would otherwise lose.
    if vmapped:
        return jax.jit(jax.vmap(fn), **jit_options())
    single = jax.jit(fn, **jit_options())

    def one_by_one(xs, keys):
        outs = [single(x, k) for x, k in zip(xs, keys, strict=True)]
        return jax.tree.map(lambda *leaves: np.stack(leaves), *jax.device_get(outs))

    return one_by_one


@functools.lru_cache(maxsize=64)
def _cached_stacked_fn(entry, als_items, epc_items, vmapped):
    return _stacked_fn(entry, dict(als_items), dict(epc_items), vmapped)


def _compiled(entry, als_kwargs, epc_kwargs, vmapped):
    """The jitted stack function, cached per entry and options so repeated calls do not retrace."""
    try:
        return _cached_stacked_fn(
            entry, tuple(sorted(als_kwargs.items())), tuple(sorted(epc_kwargs.items())), vmapped
        )
    except TypeError:  # an unhashable option (e.g. an array): build it uncached
        return _stacked_fn(entry, als_kwargs, epc_kwargs, vmapped)


_FLOATS = ("rel_error", *(f"{m}_{w}" for m in ("sensitivity", "max_intensity") for w in ("before", "after")))


def _to_layer(out: dict) -> dict:
    """Host floats for the metrics, JAX arrays for the factors."""
    return {k: float(v) if k in _FLOATS else jax.tree.map(jnp.asarray, v) for k, v in out.items()}


def decompose_batch(tensors, keys, entry: LayerPlan, als_kwargs=None, epc_kwargs=None) -> list[dict]:
    """Decomposes a stack of same-shape tensors; in one compiled call when the ranks are fixed.

    Fixed-rank entries run one jitted function (decomposition and metrics, cached per
    entry and options): ``jax.vmap``-ed over the stack when the per-layer work is small
    (per-layer overheads dominate), else called once per layer; the results are
    fetched in one transfer. Error-bound entries choose their ranks from the data, so
    they run eagerly, one at a time. Non-finite tensors raise ``ValueError``.

    Args:
      tensors: ``(B, ...)`` stacked layer tensors (see :func:`layer_tensor`).
      keys: ``(B,)`` stacked ``jax.random`` keys.
      entry: the shared plan entry.
      als_kwargs, epc_kwargs: options for ``cp_als`` / ``epc``.

    Returns:
      One dict per tensor (see :func:`decomposition_fn`), with host-side metrics
      ``sensitivity_before/after`` and ``max_intensity_before/after`` for CP methods.
    """
    als_kwargs = dict(als_kwargs or {})
    epc_kwargs = dict(epc_kwargs or {})
    host = np.asarray(tensors)
    for i in range(host.shape[0]):
        if not np.all(np.isfinite(host[i])):
            raise ValueError(f"tensors[{i}] contains NaN or Inf")
    count = host.shape[0]
    if entry.error_bound is not None:
        fn = _with_metrics(decomposition_fn(entry, als_kwargs, epc_kwargs))
        return [_to_layer(jax.device_get(fn(host[i], keys[i]))) for i in range(count)]
    work = host[0].size * (entry.rank or 1)
    vmapped = count > 1 and work <= VMAP_MAX_WORK
    out = jax.device_get(_compiled(entry, als_kwargs, epc_kwargs, vmapped)(host, keys))
    return [_to_layer(jax.tree.map(lambda a, i=i: a[i], out)) for i in range(count)]
