"""Torchvision-style dotted names for NNX submodules: listing, lookup and replacement.

A name is the chain of attribute names and list indices from the model to a
submodule, joined by dots: ``"layer4.1.conv1"`` is ``model.layer4[1].conv1`` and
``"features.28"`` is ``model.features[28]``. These are torchvision's module names,
so they double as state-dict key prefixes and as layer names in reports.

Traversal is depth first, like ``torch.nn.Module.named_modules``. List items come
in index order. Other children come in the order of the module class's
``child_order`` (a tuple of attribute names; the ported models list their layers in
forward order), then any remaining ones sorted by name. Attribute definition order
is not used: NNX rebuilds modules with sorted attributes after ``nnx.split`` /
``nnx.merge`` (``nnx.jit`` outputs, ``nnx.clone``, ``nnx.eval_shape``), so it would
change the listing.

A *conv slot* is a submodule that is an ``nnx.Conv`` or, after model surgery, a
compressed block standing in for one. Blocks are recognised by duck typing: any
module with a callable ``dense_kernel()`` method (the HWIO kernel it represents).
"""

from __future__ import annotations

from collections.abc import Iterator

from flax import nnx


def _children(module: nnx.Module) -> Iterator[tuple[str, nnx.Module]]:
    """Direct submodules of ``module`` with their name components, in definition order."""
    if isinstance(module, nnx.List):
        for index, child in enumerate(module):
            if isinstance(child, nnx.Module):
                yield str(index), child
        return
    attrs = {attr: child for attr, child in vars(module).items() if isinstance(child, nnx.Module)}
    order = getattr(type(module), "child_order", ())
    for attr in (*(a for a in order if a in attrs), *sorted(a for a in attrs if a not in order)):
        yield attr, attrs[attr]


def is_conv_slot(module) -> bool:
    """True for an ``nnx.Conv`` or a compressed block exposing ``dense_kernel()``.

    Args:
      module: any object.

    Returns:
      Whether ``module`` occupies a convolution slot.
    """
    return isinstance(module, nnx.Conv) or callable(getattr(module, "dense_kernel", None))


def named_modules(model: nnx.Module, prefix: str = "") -> Iterator[tuple[str, nnx.Module]]:
    """Yields ``(name, module)`` for ``model`` and every submodule, depth first.

    Args:
      model: an NNX module.
      prefix: name of ``model`` itself (``""`` for the root).

    Returns:
      An iterator over ``(dotted name, module)`` pairs in definition order, the
      root first (with name ``prefix``).
    """
    yield prefix, model
    for part, child in _children(model):
        yield from named_modules(child, f"{prefix}.{part}" if prefix else part)


def named_convs(model: nnx.Module) -> Iterator[tuple[str, nnx.Module]]:
    """Yields ``(name, conv)`` for every conv slot, in forward order for the ported models.

    Compressed blocks in conv slots are yielded as they are (not their inner convs).

    Args:
      model: an NNX module, e.g. from :func:`resnet18` or :func:`vgg16`.

    Returns:
      An iterator over ``(dotted name, module)``, e.g. ``("layer4.1.conv1", conv)``.
    """

    def visit(module, prefix):
        for part, child in _children(module):
            name = f"{prefix}.{part}" if prefix else part
            if is_conv_slot(child):
                yield name, child
            else:
                yield from visit(child, name)

    yield from visit(model, "")


def _child(module: nnx.Module, part: str, name: str, prefix: str) -> nnx.Module:
    for candidate, child in _children(module):
        if candidate == part:
            return child
    available = ", ".join(candidate for candidate, _ in _children(module)) or "none"
    where = f"{prefix!r} ({type(module).__name__})" if prefix else f"the root ({type(module).__name__})"
    raise ValueError(f"no submodule {name!r}: {where} has no child {part!r}; its children are: {available}")


def get_submodule(model: nnx.Module, name: str) -> nnx.Module:
    """Returns the submodule at a dotted name (``""`` is the model itself).

    Args:
      model: an NNX module.
      name: dotted torchvision-style name such as ``"layer4.1.conv1"``.

    Returns:
      The submodule.

    Raises:
      ValueError: if a component of ``name`` does not exist; the message names it
        and lists the children that do.
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a str, got {type(name).__name__}")
    module = model
    prefix = ""
    for part in name.split(".") if name else ():
        module = _child(module, part, name, prefix)
        prefix = f"{prefix}.{part}" if prefix else part
    return module


def set_submodule(model: nnx.Module, name: str, module: nnx.Module) -> None:
    """Replaces the existing submodule at a dotted name, in place.

    This is the primitive of model surgery: e.g. put a compressed block in the conv
    slot ``"layer4.1.conv1"``. The forward pass calls slots generically, so the new
    module only needs the same input and output shapes.

    Args:
      model: an NNX module, modified in place.
      name: dotted name of an existing submodule (not ``""``).
      module: the replacement, an NNX module.

    Raises:
      ValueError: if ``name`` is empty or does not exist (typos never create new
        attributes), or ``module`` is not an NNX module.
    """
    if not isinstance(module, nnx.Module):
        raise ValueError(f"module must be an nnx.Module, got {type(module).__name__}")
    if not name:
        raise ValueError("name must name a submodule, got '' (the model itself)")
    get_submodule(model, name)  # validates the whole path
    parent_name, _, part = name.rpartition(".")
    parent = get_submodule(model, parent_name)
    if isinstance(parent, nnx.List):
        parent[int(part)] = module
    else:
        setattr(parent, part, module)
