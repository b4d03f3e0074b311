"""Input validation shared by the decomposition functions.

Shape and type checks always run (shapes are static under ``jit``); value checks
(finite entries) run whenever the array is concrete, i.e. outside ``jit``/``vmap``
tracing. Every failure is a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not an abstract tracer)."""
    return not isinstance(x, jax.core.Tracer)


@jax.jit
def _all_finite(arrays):
    """Whether every entry of every array is finite (one small program per combination of shapes)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))


def all_finite(*arrays) -> bool:
    """``True`` unless a concrete array holds a NaN or Inf (tracers are not checked)."""
    concrete = tuple(a for a in arrays if is_concrete(a))
    if not concrete:
        return True
    # Constants closed over by a function being traced are concrete too; evaluate
    # their check now instead of staging it into the trace.
    with jax.ensure_compile_time_eval():
        return bool(_all_finite(concrete))


def as_float_array(
    x, name: str, *, ndim: int | None = None, min_ndim: int | None = None, check_values: bool = True
):
    """Converts ``x`` to a floating JAX array and checks its rank and, unless
    ``check_values=False``, that its entries are finite."""
    try:
        arr = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an array, got {type(x).__name__}") from err
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.complexfloating) or arr.dtype == bool:
            raise ValueError(f"{name} must be real floating point, got dtype {arr.dtype}")
        arr = arr.astype(jnp.result_type(float))
    elif jnp.finfo(arr.dtype).bits < 32:
        # float16 / bfloat16: LAPACK has no such kernels, and their 3-digit
        # mantissas could not hold a least-squares solve; computed in float32.
        arr = arr.astype(jnp.float32)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have ndim={ndim}, got shape {arr.shape}")
    if min_ndim is not None and arr.ndim < min_ndim:
        raise ValueError(f"{name} must have ndim>={min_ndim}, got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if check_values and not all_finite(arr):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def check_key(key, name: str = "key"):
    """A ``jax.random`` key: ``PRNGKey(0)`` for ``None``; a typed key
    (``jax.random.key``) or a raw ``uint32[2]`` one (``jax.random.PRNGKey``)."""
    if key is None:
        return jax.random.PRNGKey(0)
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    if not (typed or (dtype == jnp.uint32 and tuple(shape) == (2,))):
        raise ValueError(
            f"{name} must be a jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed)), got {key!r}"
        )
    return key


def check_positive_int(value, name: str, *, upper: int | None = None) -> int:
    """Returns ``value`` as ``int`` if it is a positive integer (``<= upper``)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    value = int(value)
    if value <= 0:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name} must be <= {upper}, got {value}")
    return value


def check_fraction(value, name: str) -> float:
    """Checks a relative error bound lies in the open interval (0, 1)."""
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a float in (0, 1), got {value!r}") from err
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def check_tol(value, name: str = "tol") -> float:
    """Checks a non-negative finite tolerance."""
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite float >= 0, got {value}")
    return value


def check_factors(factors, name: str = "factors", *, shape=None):
    """Validates a tuple of factor matrices sharing the same number of columns.

    Args:
      factors: sequence of 2-D arrays ``(I_n, R)``.
      name: argument name used in error messages.
      shape: optional tensor shape the factors must match (row counts).

    Returns:
      A tuple of floating JAX arrays.
    """
    if not isinstance(factors, tuple | list) or len(factors) < 2:
        raise ValueError(f"{name} must be a tuple of at least 2 factor matrices")
    mats = tuple(as_float_array(f, f"{name}[{n}]", ndim=2, check_values=False) for n, f in enumerate(factors))
    if not all_finite(*mats):
        bad = next(n for n, m in enumerate(mats) if not all_finite(m))
        raise ValueError(f"{name}[{bad}] contains NaN or Inf")
    ranks = {m.shape[1] for m in mats}
    if len(ranks) != 1:
        shapes = [m.shape for m in mats]
        raise ValueError(f"{name} must share one number of columns (rank), got shapes {shapes}")
    if shape is not None:
        rows = tuple(m.shape[0] for m in mats)
        if rows != tuple(shape):
            raise ValueError(f"{name} row counts {rows} do not match the tensor shape {tuple(shape)}")
    return mats
