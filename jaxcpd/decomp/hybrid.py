"""The paper's two stable pipelines: CPD-EPC (section 2.3) and TKD-CPD (section 2.4, Fig. 1c)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._checks import as_float_array
from ._program import program
from ._scale import power_of_two_scale
from .cp_als import CPResult, cp_als
from .epc import EPCResult, epc
from .kruskal import reconstruct
from .tucker import tucker2


class CPDEPCResult(NamedTuple):
    """Result of :func:`cpd_epc`: the ALS decomposition and its correction."""

    cpd: CPResult
    epc: EPCResult


class TKDCPResult(NamedTuple):
    """Result of :func:`tkd_cpd`.

    ``X ~= [[A, U B, V C]]`` with ``factors = (A, B, C)`` the CPD of the Tucker core.

    Attributes:
      U: ``(J, R1)`` orthonormal Tucker factor (input channels).
      V: ``(K, R2)`` orthonormal Tucker factor (output channels).
      factors: ``(A, B, C)`` of shapes ``(I, R)``, ``(R1, R)``, ``(R2, R)``.
      rel_error: ``||X - [[A, U B, V C]]||_F / ||X||_F``, measured against X.
      tucker_rel_error: relative error of the Tucker-2 step alone.
      core_rel_error: ``||G - [[A, B, C]]||_F / ||X||_F``; with orthonormal U, V,
        ``rel_error^2 = tucker_rel_error^2 + core_rel_error^2`` (Pythagoras).
      cpd_factors: the core's CPD before EPC (equal to ``factors`` when ``epc=False``),
        for comparing sensitivity before and after the correction.
    """

    U: jax.Array
    V: jax.Array
    factors: tuple
    rel_error: jax.Array
    tucker_rel_error: jax.Array
    core_rel_error: jax.Array
    cpd_factors: tuple


def _kwargs(value, name):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of keyword arguments, got {type(value).__name__}")
    return value


def cpd_epc(x, rank, *, key=None, als_kwargs=None, epc_kwargs=None):
    """CPD by ALS followed by EPC at the ALS error (the paper's "CPD-EPC").

    Args:
      x: tensor of order N >= 2 (``(D*D, S, T)`` for a conv kernel).
      rank: CP rank R.
      key: ``jax.random`` key for the ALS initialisation.
      als_kwargs: extra keyword arguments for :func:`cp_als`.
      epc_kwargs: extra keyword arguments for :func:`epc` (e.g. ``delta``).

    Returns:
      :class:`CPDEPCResult` ``(cpd, epc)``.
    """
    cpd = cp_als(x, rank, key=key, **_kwargs(als_kwargs, "als_kwargs"))
    return CPDEPCResult(cpd, epc(x, cpd.factors, **_kwargs(epc_kwargs, "epc_kwargs")))


def tkd_cpd(x, ranks, cp_rank, *, key=None, epc=True, tucker_kwargs=None, als_kwargs=None, epc_kwargs=None):
    """Tucker-2 of ``x`` followed by a CPD (optionally corrected by EPC) of its core.

    Section 2.4 and Fig. 1c: ``X ~= G x_2 U x_3 V`` and ``G ~= [[A, B, C]]``. When
    ``cp_rank`` is below both Tucker ranks the adjacent 1x1 convolutions of the
    block can be merged (``U B`` and ``V C``), giving a CP block.

    Args:
      x: ``(I, J, K)`` tensor.
      ranks: Tucker ranks ``(R1, R2)``, or ``None`` with ``tucker_kwargs={"error_bound": eps}``.
      cp_rank: CP rank R of the core.
      key: ``jax.random`` key for the ALS initialisation.
      epc: apply EPC to the core CPD (the paper's TKD-CPD-EPC).
      tucker_kwargs, als_kwargs, epc_kwargs: extra keyword arguments of
        :func:`tucker2`, :func:`cp_als` and :func:`jaxcpd.epc`.

    Returns:
      :class:`TKDCPResult`, its error measured against ``x``.
    """
    x = as_float_array(x, "x", ndim=3)
    tk = tucker2(x, ranks, **_kwargs(tucker_kwargs, "tucker_kwargs"))
    if epc:
        res = cpd_epc(tk.core, cp_rank, key=key, als_kwargs=als_kwargs, epc_kwargs=epc_kwargs)
        cpd_factors, factors = res.cpd.factors, res.epc.factors
    else:
        cpd_factors = factors = cp_als(tk.core, cp_rank, key=key, **_kwargs(als_kwargs, "als_kwargs")).factors
    rel_error, core_rel_error = _tkd_cpd_errors(x, tk.core, tk.U, tk.V, factors)
    return TKDCPResult(tk.U, tk.V, factors, rel_error, tk.rel_error, core_rel_error, cpd_factors)


@program
def _tkd_cpd_errors(x, core, u, v, factors):
    """Relative errors of ``[[A, U B, V C]]`` against ``x`` and of ``[[A, B, C]]`` against the core."""
    a, b, c = factors
    # Norms of x / scale: its squares can neither overflow nor underflow (``_scale.py``).
    scale = power_of_two_scale(x)[0]
    norm = jnp.linalg.norm(x / scale)
    safe = jnp.where(norm > 0, norm, 1.0)
    rel_error = jnp.linalg.norm((x - reconstruct((a, u @ b, v @ c))) / scale) / safe
    core_rel_error = jnp.linalg.norm((core - reconstruct(factors)) / scale) / safe
    return rel_error, core_rel_error
