"""The optax transformation a :class:`TrainConfig` describes, and the freeze filter."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import nnx

from .config import TrainConfig


def _schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.learning_rate, config.total_steps(steps_per_epoch))
    return optax.constant_schedule(config.learning_rate)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
    """Builds the gradient transformation of ``config``.

    With ``schedule="plateau"`` the chain ends in ``optax.contrib.reduce_on_plateau``,
    which needs the training loss: pass it as ``value=loss`` to ``update``. Its state
    (the current scale, the best windowed loss) lives in the optimizer state, so
    checkpoints carry it.

    Args:
      config: the training configuration.
      steps_per_epoch: steps in one epoch (sets the cosine horizon and the default plateau window).

    Returns:
      The transformation.
    """
    learning_rate = _schedule(config, steps_per_epoch)
    if config.optimizer == "adamw":
        tx = optax.adamw(learning_rate, b1=config.momentum, weight_decay=config.weight_decay)
    else:
        momentum = config.momentum if config.optimizer == "momentum" else None
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.sgd(learning_rate, momentum))
    if config.schedule != "plateau":
        return optax.chain(tx)  # a chain accepts (and ignores) the `value=loss` the training step passes
    plateau = optax.contrib.reduce_on_plateau(
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        rtol=config.plateau_rtol,
        accumulation_size=config.plateau_window or steps_per_epoch,
    )
    return optax.chain(tx, plateau)


def current_learning_rate(config: TrainConfig, optimizer: nnx.Optimizer, steps_per_epoch: int) -> float:
    """The learning rate the next update will use (schedule value times any plateau scale).

    Args:
      config: the configuration the optimizer was built from.
      optimizer: the optimizer.
      steps_per_epoch: as given to :func:`make_optimizer`.

    Returns:
      The learning rate as a Python float.
    """
    learning_rate = float(_schedule(config, steps_per_epoch)(int(optimizer.step[...])))
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
