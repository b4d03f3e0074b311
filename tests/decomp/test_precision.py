"""Every matrix product the decomposition programs trace is at full float32 precision,
even when the process asks for bfloat16 products (what TPUs do by default)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cp_testing import full, random_factors
from jax import lax
from jax.extend.core import ClosedJaxpr, Jaxpr

import jaxcpd
from jaxcpd.decomp.tucker import _spectrum, _tucker2_fixed

X = jnp.asarray(full(random_factors((9, 8, 6), 3, seed=1)), jnp.float32)
FACTORS = tuple(jnp.asarray(f) for f in random_factors((9, 8, 6), 3, seed=2))
KEY = jax.random.PRNGKey(0)
U = jnp.linalg.qr(jnp.asarray(np.random.default_rng(3).standard_normal((8, 4)), jnp.float32))[0]

PROGRAMS = {
    "cp_als svd start": lambda: jaxcpd.cp_als(X, 3, max_iter=3),
    "cp_als random start": lambda: jaxcpd.cp_als(X, 3, init="random", key=KEY, max_iter=3),
    "cp_als given start": lambda: jaxcpd.cp_als(X, 3, init=FACTORS, max_iter=3),
    "epc sensitivity": lambda: jaxcpd.epc(X, FACTORS, max_iter=3),
    "epc intensity": lambda: jaxcpd.epc(X, FACTORS, delta=1.0, objective="intensity", max_iter=2),
    "cpd_epc": lambda: jaxcpd.cpd_epc(X, 3, als_kwargs={"max_iter": 3}, epc_kwargs={"max_iter": 3}),
    "tucker2 fixed ranks": lambda: jaxcpd.tucker2(X, (4, 3), max_iter=3),
    "tucker2 error-bound search, fixed step": lambda: _tucker2_fixed(X, 0.0, 3, ranks=(4, 3)),
    "tucker2 error-bound search, eigen step": lambda: _spectrum(X, U[:6, :3], 1, 4),
    "tkd_cpd": lambda: jaxcpd.tkd_cpd(X, (4, 3), 3, als_kwargs={"max_iter": 3}, epc_kwargs={"max_iter": 3}),
    "cp_reconstruct": lambda: jaxcpd.cp_reconstruct(FACTORS),
    "a CP block's dense kernel": lambda: jaxcpd.nn.CPConv.from_factors(FACTORS, kernel_size=3).dense_kernel(),
    "truncated_svd": lambda: jaxcpd.truncated_svd(X[0], 3),
}


def _dot_precisions(jaxpr):
    """The ``precision`` of every ``dot_general`` in ``jaxpr`` and in the jaxprs it calls."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is lax.dot_general_p:
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, ClosedJaxpr):
                    found += _dot_precisions(sub.jaxpr)
                elif isinstance(sub, Jaxpr):
                    found += _dot_precisions(sub)
    return found


@pytest.mark.parametrize("name", PROGRAMS)
def test_matrix_products_are_full_float32_whatever_the_default(name):
    highest = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
    with jax.default_matmul_precision("bfloat16"):
        jaxpr = jax.make_jaxpr(PROGRAMS[name])().jaxpr
        precisions = _dot_precisions(jaxpr)
        # The walk sees the products: the same check on a bare product finds bfloat16.
        bare = _dot_precisions(jax.make_jaxpr(lambda m: m @ m.T)(X[0]).jaxpr)
    assert bare == [(lax.Precision.DEFAULT, lax.Precision.DEFAULT)]
    if name != "truncated_svd":
        assert precisions, "no matrix product traced"
    assert all(p == highest for p in precisions), precisions
