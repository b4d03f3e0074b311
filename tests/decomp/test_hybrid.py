import jax
import numpy as np
import pytest
from cp_testing import full, random_factors

import jaxcpd


def _x(seed=0, shape=(9, 12, 14)):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("epc", [False, True])
def test_error_is_tucker_and_core_errors_composed(epc):
    x = _x()
    res = jaxcpd.tkd_cpd(x, (6, 7), 10, epc=epc, epc_kwargs={"max_iter": 10})
    u, v = np.asarray(res.U, np.float64), np.asarray(res.V, np.float64)
    a, b, c = (np.asarray(f, np.float64) for f in res.factors)
    approx = full((a, u @ b, v @ c))
    direct = np.linalg.norm(x - approx) / np.linalg.norm(x)
    np.testing.assert_allclose(float(res.rel_error), direct, rtol=1e-4)
    # Pythagoras: the Tucker residual is orthogonal to everything in span(U) x span(V)
    composed = np.hypot(float(res.tucker_rel_error), float(res.core_rel_error))
    np.testing.assert_allclose(float(res.rel_error), composed, rtol=1e-4)
    tk = jaxcpd.tucker2(x, (6, 7))
    np.testing.assert_allclose(float(res.tucker_rel_error), float(tk.rel_error), rtol=1e-5)


def test_lossless_tucker_equals_plain_cpd():
    kw = {"max_iter": 300, "tol": 0.0}
    x = full(random_factors((9, 8, 10), 4, seed=3)).astype(np.float32)
    res = jaxcpd.tkd_cpd(x, (8, 10), 4, epc=False, als_kwargs=kw)
    plain = jaxcpd.cp_als(x, 4, **kw)
    assert float(res.tucker_rel_error) < 1e-5
    assert float(res.rel_error) < 1e-5 and float(plain.rel_error) < 1e-5
    noisy = _x(4, (9, 8, 10))
    a = jaxcpd.tkd_cpd(noisy, (8, 10), 4, epc=False, als_kwargs=kw)
    b = jaxcpd.cp_als(noisy, 4, **kw)
    assert abs(float(a.rel_error) - float(b.rel_error)) < 1e-3


def test_epc_keeps_error_and_lowers_sensitivity_of_core():
    x = _x(1)
    res = jaxcpd.tkd_cpd(x, (6, 7), 10, epc_kwargs={"max_iter": 10})
    before = float(jaxcpd.cp_sensitivity(res.cpd_factors))
    assert float(jaxcpd.cp_sensitivity(res.factors)) < before
    no_epc = jaxcpd.tkd_cpd(x, (6, 7), 10, epc=False)
    assert float(res.rel_error) <= float(no_epc.rel_error) * (1 + 1e-5)


def test_cpd_epc_returns_both():
    both = jaxcpd.cpd_epc(_x(2), 5, key=jax.random.PRNGKey(1))
    assert isinstance(both, jaxcpd.CPDEPCResult)
    assert float(both.epc.sensitivity) <= float(jaxcpd.cp_sensitivity(both.cpd.factors)) * (1 + 1e-5)


def test_bad_kwargs():
    with pytest.raises(ValueError, match="als_kwargs must be a dict"):
        jaxcpd.cpd_epc(_x(), 3, als_kwargs=[1])
    with pytest.raises(ValueError, match="ndim=3"):
        jaxcpd.tkd_cpd(np.ones((4, 4)), (2, 2), 2)
