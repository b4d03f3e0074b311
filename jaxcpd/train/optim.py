"""The optax transformation a :class:`TrainConfig` describes, and the freeze filter."""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax
from flax import nnx

from .config import TrainConfig


def _schedule(kind: str, learning_rate: float, total_steps: int) -> optax.Schedule:
    if kind == "cosine":
        return optax.cosine_decay_schedule(learning_rate, total_steps)
    return optax.constant_schedule(learning_rate)


def _rate(config: TrainConfig, steps_per_epoch: int) -> tuple:
    """The arguments of :func:`_schedule` for ``config``."""
    total = config.total_steps(steps_per_epoch) if config.schedule == "cosine" else 0
    return config.schedule, config.learning_rate, total


def _recipe(config: TrainConfig, steps_per_epoch: int) -> tuple:
    """The fields of ``config`` the transformation depends on, resolved for ``steps_per_epoch``."""
    window = config.plateau_window or steps_per_epoch
    plateau = (config.plateau_factor, config.plateau_patience, config.plateau_rtol, window)
    plateau = plateau if config.schedule == "plateau" else None
    return config.optimizer, config.momentum, config.weight_decay, _rate(config, steps_per_epoch), plateau


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
    """Builds the gradient transformation of ``config``.

    With ``schedule="plateau"`` the chain ends in ``optax.contrib.reduce_on_plateau``,
    which needs the training loss: pass it as ``value=loss`` to ``update``. Its state
    (the current scale, the best windowed loss) lives in the optimizer state, so
    checkpoints carry it.

    Equal recipes give the same transformation object. ``nnx.jit`` keys its compiled
    programs on the optimizer's structure, which holds the transformation, so fine-tuning
    a second model of the same structure with the same recipe (CPD and CPD-EPC at equal
    ranks) reuses the first one's compiled training step instead of compiling it again.

    Args:
      config: the training configuration.
      steps_per_epoch: steps in one epoch (sets the cosine horizon and the default plateau window).

    Returns:
      The transformation.
    """
    return _transformation(*_recipe(config, steps_per_epoch))


@functools.lru_cache(maxsize=32)
def _transformation(optimizer, momentum, weight_decay, rate, plateau):
    """:func:`make_optimizer` for the resolved fields of :func:`_recipe`."""
    rate = _schedule(*rate)
    if optimizer == "adamw":
        tx = optax.adamw(rate, b1=momentum, weight_decay=weight_decay)
    else:
        sgd = optax.sgd(rate, momentum if optimizer == "momentum" else None)
        tx = optax.chain(optax.add_decayed_weights(weight_decay), sgd)
    if plateau is None:
        return optax.chain(tx)  # a chain accepts (and ignores) the `value=loss` the training step passes
    factor, patience, rtol, window = plateau
    reduce = optax.contrib.reduce_on_plateau(factor, patience, rtol, accumulation_size=window)
    return optax.chain(tx, reduce)


def current_learning_rate(config: TrainConfig, optimizer: nnx.Optimizer, steps_per_epoch: int) -> float:
    """The learning rate the next update will use (schedule value times any plateau scale).

    Args:
      config: the configuration the optimizer was built from.
      optimizer: the optimizer.
      steps_per_epoch: as given to :func:`make_optimizer`.

    Returns:
      The learning rate as a Python float.
    """
    learning_rate = float(_schedule(*_rate(config, steps_per_epoch))(int(optimizer.step[...])))
    if config.schedule != "plateau":
        return learning_rate
    is_plateau = lambda node: isinstance(node, optax.contrib.ReduceLROnPlateauState)  # noqa: E731
    (state,) = [node for node in jax.tree.leaves(optimizer.opt_state, is_leaf=is_plateau) if is_plateau(node)]
    return learning_rate * float(state.scale[...])


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(key) for key in path)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def trainable_filter(model: nnx.Module, prefixes: tuple[str, ...]) -> nnx.filterlib.Filter:
    """An NNX filter selecting the parameters under the given layer-name prefixes.

    Names are the dotted NNX paths, which for the ported models are torchvision's
    (``"layer4.1.conv1"`` selects ``layer4.1.conv1.kernel`` and any bias). A prefix
    matches whole name components only: ``"layer1"`` does not select ``layer10``.

    Args:
      model: the model whose parameters are filtered.
      prefixes: layer-name prefixes; empty selects every ``nnx.Param``.

    Returns:
      A filter for ``nnx.Optimizer(wrt=...)`` and ``nnx.DiffState``.

    Raises:
      ValueError: if a prefix matches no parameter; the message lists the layer names.
    """
    if not prefixes:
        return nnx.Param
    names = [_dotted(path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    for prefix in prefixes:
        if not any(_under(name, prefix) for name in names):
            layers = sorted({name.rsplit(".", 1)[0] for name in names})
            raise ValueError(f"trainable: {prefix!r} matches no parameter; layers are {', '.join(layers)}")
    return nnx.All(nnx.Param, lambda path, _: any(_under(_dotted(path), prefix) for prefix in prefixes))
