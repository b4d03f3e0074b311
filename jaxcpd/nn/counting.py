"""Parameter and multiply-add counts of whole NNX models.

FLOPs here are multiply-adds (MACs) of the linear layers, the convention of the
paper's tables and of torchvision's model cards: a dense conv costs
``output pixels x kh x kw x (S / groups) x T``, a dense layer ``rows x S x T``;
bias additions, normalisation, activations and pooling are not counted. The blocks
of this package count each of their stages with the same rule
(``block.flops(input_hw)``).

:func:`count_flops` traces the model once with ``jax.eval_shape`` (no arithmetic is
done) while intercepting the calls of the counted layers, so every layer is
counted at the feature-map size it really sees: strides, pooling, shortcuts and
layers called several times are all accounted for.
"""

from __future__ import annotations

import contextlib
import math
import threading

import jax
import jax.numpy as jnp
from flax import nnx

from ._separable import SeparableConv
from .svd import SVDConv, SVDDense
from .tucker2_conv import Tucker2Conv

COUNTED_TYPES = (nnx.Conv, nnx.Linear, SeparableConv, SVDConv, SVDDense, Tucker2Conv)

_lock = threading.Lock()
_active = threading.local()
_MISSING = object()


def layer_flops(module: nnx.Module, x_shape, y_shape) -> int:
    """Multiply-adds of one call of a counted layer, from its input and output shapes.

    Args:
      module: an ``nnx.Conv``, ``nnx.Linear`` or a block of this package.
      x_shape: shape of the call's input.
      y_shape: shape of the call's output.

    Returns:
      The multiply-adds of that call (all batch elements).
    """
    if isinstance(module, nnx.Conv):
        return math.prod(y_shape) * math.prod(module.kernel.shape[:-1])
    if isinstance(module, nnx.Linear):
        return math.prod(y_shape[:-1]) * module.in_features * module.out_features
    if isinstance(module, SVDDense):
        return math.prod(y_shape[:-1]) * module.flops()
    if isinstance(module, SeparableConv | SVDConv | Tucker2Conv):
        return math.prod(x_shape[:-3]) * module.flops(x_shape[-3:-1])
    names = [t.__name__ for t in COUNTED_TYPES]
    raise ValueError(f"module must be one of {names}, got {type(module).__name__}")


class _Recorder:
    def __init__(self, paths):
        self.paths = paths
        self.depth = 0
        self.flops: dict[str, int] = {}

    def add(self, module, x_shape, y_shape):
        name = self.paths.get(id(module), type(module).__name__)
        self.flops[name] = self.flops.get(name, 0) + layer_flops(module, x_shape, y_shape)


def _counting_call(call):
    def wrapper(self, *args, **kwargs):
        recorder = getattr(_active, "recorder", None)
        if recorder is None or recorder.depth:
            return call(self, *args, **kwargs)
        x = args[0] if args else next(iter(kwargs.values()))
        recorder.depth += 1
        try:
            y = call(self, *args, **kwargs)
        finally:
            recorder.depth -= 1
        recorder.add(self, jnp.shape(x), jnp.shape(y))
        return y

    return wrapper


@contextlib.contextmanager
def _intercept(types, recorder):
    """Routes ``__call__`` of ``types`` through ``recorder`` on this thread; restores them on exit."""
    with _lock:
        saved = {t: t.__dict__.get("__call__", _MISSING) for t in types}
        calls = {t: t.__call__ for t in types}
        _active.recorder = recorder
        try:
            for t in types:
                t.__call__ = _counting_call(calls[t])
            yield
        finally:
            for t, original in saved.items():
                if original is _MISSING:
                    del t.__call__
                else:
                    t.__call__ = original
            _active.recorder = None


def count_flops(model: nnx.Module, input_shape, *, dtype=jnp.float32, by_layer: bool = False, **call_kwargs):
    """Multiply-adds of ``model(x)`` for an input of shape ``input_shape``.

    Counts ``nnx.Conv`` (grouped and dilated too), ``nnx.Linear``, :class:`CPConv`,
    :class:`TKDCPConv`, :class:`SVDConv` and :class:`SVDDense`; other layers cost
    nothing here. Layers nested inside a counted layer are not counted twice. The
    model is traced abstractly (``jax.eval_shape``): nothing is computed and the
    model's state (e.g. batch statistics) is left unchanged. While counting, the
    ``__call__`` of the counted classes is wrapped (as ``nnx.tabulate`` does); the
    wrapper only records calls made by the counting thread, and concurrent counts
    are serialised. A layer inside a ``scan``/``fori_loop`` body is traced, hence
    counted, once rather than once per iteration.

    Args:
      model: an NNX module called as ``model(x, **call_kwargs)``.
      input_shape: shape of ``x``, batch included; ``(1, 224, 224, 3)`` gives the
        per-image count of an ImageNet model.
      dtype: dtype of ``x``.
      by_layer: return a dict ``{layer path: multiply-adds}`` (paths like
        ``'layer1.0.conv1'``, in call order) instead of the total.
      **call_kwargs: extra keyword arguments for the call (e.g. ``train=False``).

    Returns:
      The total as an ``int``, or the per-layer dict.
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    try:
        input_shape = tuple(int(n) for n in input_shape)
    except TypeError as err:
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}") from err
    types = {type(m) for _, m in nnx.iter_modules(model) if isinstance(m, COUNTED_TYPES)}
    graphdef, state = nnx.split(model)
    recorder = _Recorder({})

    def run(state, x):
        module = nnx.merge(graphdef, state)
        recorder.paths = {
            id(m): ".".join(map(str, path)) or type(m).__name__ for path, m in nnx.iter_modules(module)
        }
        return module(x, **call_kwargs)

    with _intercept(types, recorder):
        jax.eval_shape(run, state, jax.ShapeDtypeStruct(input_shape, dtype))
    return dict(recorder.flops) if by_layer else sum(recorder.flops.values())


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (``nnx.Param`` entries) of an NNX model.

    Batch statistics and other non-``Param`` state are not counted. Works on abstract
    models (e.g. from ``nnx.eval_shape``) too.

    Args:
      model: any NNX module.

    Returns:
      The total number of scalars in its ``nnx.Param`` variables.
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"model must be a flax.nnx.Module, got {type(model).__name__}")
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
