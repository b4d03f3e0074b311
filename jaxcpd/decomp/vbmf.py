"""Empirical variational Bayesian matrix factorisation (EVBMF) rank estimation.

The global analytic solution of fully observed VBMF with the noise variance
estimated by minimising the free energy (Nakajima, Sugiyama, Babacan and Tomioka,
JMLR 2013, Theorem 13 and eq. 29-32). MUSCO (Gusak et al., 2019) applies it to the
unfoldings of conv kernels to pick Tucker-2 ranks; :func:`evbmf_rank` is that
estimator, written here from the paper's formulas.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from ._checks import as_float_array


def _tau(x, alpha):
    return 0.5 * (x - (1 + alpha) + np.sqrt((x - (1 + alpha)) ** 2 - 4 * alpha))


def _free_energy(sigma2, l_dim, m_dim, s, residual, xubar):
    """Free energy (up to constants) as a function of the noise variance (eq. 29-31)."""
    h = len(s)
    alpha = l_dim / m_dim
    x = s**2 / (m_dim * sigma2)
    z1 = x[x > xubar]
    z2 = x[x <= xubar]
    tau_z1 = _tau(z1, alpha)
    return (
        np.sum(z2 - np.log(z2))
        + np.sum(z1 - tau_z1)
        + np.sum(np.log((tau_z1 + 1) / z1))
        + alpha * np.sum(np.log(tau_z1 / alpha + 1))
        + residual / (m_dim * sigma2)
        + (l_dim - h) * np.log(sigma2)
    )


def evbmf_rank(matrix, sigma2=None) -> int:
    """Rank of a matrix estimated by empirical VBMF.

    Args:
      matrix: 2-D array (e.g. the mode-2 unfolding ``S x D^2 T`` of a kernel).
      sigma2: noise variance; estimated from the data when omitted.

    Returns:
      The number of singular values above the EVBMF threshold
      ``sqrt(M sigma^2 (1 + tau) (1 + alpha / tau))`` (at least 1 for a nonzero matrix).
    """
    y = np.asarray(as_float_array(matrix, "matrix", ndim=2), np.float64)
    if y.shape[0] > y.shape[1]:
        y = y.T
    l_dim, m_dim = y.shape
    s = np.linalg.svd(y, compute_uv=False)
    if s[0] == 0:
        return 0
    alpha = l_dim / m_dim
    tauubar = 2.5129 * np.sqrt(alpha)
    xubar = (1 + tauubar) * (1 + alpha / tauubar)
    if sigma2 is None:
        residual = 0.0
        e_h_ub = int(min(np.ceil(l_dim / (1 + alpha)) - 1, l_dim)) - 1
        upper = (np.sum(s**2) + residual) / (l_dim * m_dim)
        tail = s[e_h_ub + 1:] if e_h_ub + 1 < len(s) else s[-1:]
        lower = max(tail[0] ** 2 / (m_dim * xubar), np.mean(tail**2) / m_dim)
        lower = min(max(lower, upper * 1e-12), upper)
        opt = minimize_scalar(
            _free_energy, args=(l_dim, m_dim, s, residual, xubar), bounds=(lower, upper), method="bounded"
        )
        sigma2 = float(opt.x)
    elif not np.isfinite(sigma2) or sigma2 <= 0:
        raise ValueError(f"sigma2 must be a positive float, got {sigma2}")
    threshold = np.sqrt(m_dim * sigma2 * (1 + tauubar) * (1 + alpha / tauubar))
    return max(int(np.sum(s > threshold)), 1)
