"""How the decomposition programs are compiled.

Each public decomposition function runs one or a few jitted programs (``program``):
traced with full float32 products (``_precision.py``) and, on XLA:CPU, compiled with
its elemental emitters instead of the newer fusion emitters
(``xla_cpu_use_fusion_emitters=False``, as a per-program compiler option, so nothing
else in the process changes). On the EPC program of a ``(9, 12, 10)`` rank-5 CPD
that halves the compilation (3.6-4.5 s -> 2.0 s; ALS 1.5-1.8 s -> 0.85 s), and the
sweeps run as fast or faster (``docs/performance.md``). These emitters unroll a
reduction's window fully, so the programs sum matrices as flat vectors (``_sum.inner``).
A caller that jits the public functions inside a larger program can pass the same
options to its own ``jit``: ``jit_options()``.

The option is decided on first use, not at import (which must not start a backend):
it is used only when the default backend is the CPU and this XLA accepts it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._precision import float32_matmuls

_CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def _probe():
    """A trivial program with the CPU options: it tells whether this XLA accepts them, and,
    called before a program, whether JAX would take them there (see ``_at_top_level``)."""
    return jax.jit(lambda: jnp.zeros(()), compiler_options=_CPU_OPTIONS)


@functools.cache
def jit_options() -> dict:
    """Keyword arguments for ``jax.jit`` of a decomposition program: the XLA:CPU compiler
    options where the default backend is the CPU and this JAX/XLA accepts them, else none."""
    if jax.default_backend() != "cpu":
        return {}
    try:  # compiled, not called: this may run while a caller's program is being traced
        _probe().lower().compile()
    except Exception:  # an XLA without the option, or a JAX without ``compiler_options``
        return {}
    return {"compiler_options": _CPU_OPTIONS}


def _at_top_level() -> bool:
    """Whether a jitted call made here runs as a program of its own (also under a top-level
    ``jax.vmap`` or ``jax.jvp``), rather than being staged into a caller's program."""
    try:
        _probe()()
    except ValueError as err:
        if "top-level" not in str(err):
            raise
        return False
    return True


class _Program:
    """A jitted decomposition program, compiled with ``jit_options()`` where it runs as a
    program of its own.

    JAX takes compiler options only on a top-level ``jax.jit``: inside another program
    (a caller's ``jax.jit``, ``compression``'s group programs) this one is inlined and
    the outer program's options apply, so it is traced there by a plain ``jax.jit``.
    ``_at_top_level`` tells the two apart with a trivial program before this one is
    traced, so a program nested in a caller's ``jit`` is traced once. Reverse mode
    (``jax.grad``) stages the program even at top level, which the probe, having no
    inputs, does not see: JAX's refusal then sends it to the plain ``jit``.
    """

    def __init__(self, fn, jit_kwargs):
        functools.update_wrapper(self, fn)
        self._fn = float32_matmuls(fn)
        self._jit_kwargs = jit_kwargs

    @functools.cached_property
    def _plain(self):
        return jax.jit(self._fn, **self._jit_kwargs)

    @functools.cached_property
    def _top_level(self):
        options = jit_options()
        return jax.jit(self._fn, **self._jit_kwargs, **options) if options else self._plain

    def __call__(self, *args, **kwargs):
        if self._top_level is not self._plain and _at_top_level():
            try:
                return self._top_level(*args, **kwargs)
            except ValueError as err:  # reverse mode stages the program even at top level
                if "top-level" not in str(err):
                    raise
        return self._plain(*args, **kwargs)


def program(fn=None, **jit_kwargs):
    """Decorator: ``fn`` as a decomposition program (``jax.jit`` keywords such as
    ``static_argnames`` pass through)."""
    if fn is None:
        return functools.partial(program, **jit_kwargs)
    return _Program(fn, jit_kwargs)
