"""Import and export of torchvision state dicts for the NNX ports.

Key ``"<module name>.<torch parameter>"`` maps to a variable of the module at
``<module name>`` (see :mod:`jaxcpd.models.naming`):

==================  ==========================  ================================
NNX module          NNX variable                torch key suffix and layout
==================  ==========================  ================================
``nnx.Conv``        ``kernel`` HWIO             ``weight`` OIHW
                    ``bias``                    ``bias``
``nnx.Linear``      ``kernel`` ``(in, out)``    ``weight`` ``(out, in)``
                    ``bias``                    ``bias``
``nnx.BatchNorm``   ``scale``, ``bias``         ``weight``, ``bias``
                    ``mean``, ``var``           ``running_mean``, ``running_var``
                    (none)                      ``num_batches_tracked`` (ignored
                                                on import, written as 0)
==================  ==========================  ================================

VGG's flatten order needs no conversion: the port flattens in torch's NCHW order
(see :mod:`jaxcpd.models.vgg`). Batch-norm momentum and epsilon are fixed by the
architecture (torch's ``0.1``/``1e-5``, i.e. Flax ``momentum=0.9``) and are not
part of a state dict.

``.pth``/``.pt`` files need torch (imported only then) and are read with
``torch.load(..., weights_only=True)``, which never unpickles code;
``.safetensors`` files need only the ``safetensors`` package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .naming import named_convs, named_modules

_SUFFIXES = (".pth", ".pt", ".safetensors")
_MAX_LISTED = 20


# module type -> ((NNX attribute, torch suffix, axes of the NNX array in torch order), ...), in torch's
# key order; the axes are a transpose permutation (HWIO -> OIHW, (in, out) -> (out, in)) or None.
_LAYOUTS: dict[type, tuple[tuple[str, str, tuple[int, ...] | None], ...]] = {
    nnx.Conv: (("kernel", "weight", (3, 2, 0, 1)), ("bias", "bias", None)),
    nnx.Linear: (("kernel", "weight", (1, 0)), ("bias", "bias", None)),
    nnx.BatchNorm: (
        ("scale", "weight", None),
        ("bias", "bias", None),
        ("mean", "running_mean", None),
        ("var", "running_var", None),
    ),
}
_BN_COUNTER = "num_batches_tracked"


class _Entry(NamedTuple):
    """A torch key's NNX variable and the permutation taking its value to torch's layout."""

    variable: nnx.Variable
    axes: tuple[int, ...] | None

    def torch_shape(self) -> tuple[int, ...]:
        shape = self.variable.get_value().shape
        return shape if self.axes is None else tuple(shape[axis] for axis in self.axes)

    def to_torch(self) -> np.ndarray:
        value = np.asarray(self.variable.get_value())
        if self.axes is not None:
            value = np.transpose(value, self.axes)
        return np.array(value, order="C")  # a writable copy, not a view of the JAX buffer

    def from_torch(self, array: np.ndarray) -> jax.Array:
        dtype = self.variable.get_value().dtype
        if self.axes is None:
            # copy: jnp.asarray may alias host memory on CPU, and torch may later update the
            # source tensor in place (running_mean and running_var do so in training mode)
            return jnp.array(array, dtype=dtype)
        # the transposed copy belongs to nobody else, so it may be aliased without a second copy
        return jnp.asarray(np.ascontiguousarray(np.transpose(array, np.argsort(self.axes))), dtype=dtype)


def _check_uncompressed(model: nnx.Module, action: str) -> None:
    blocks = [f"{name} ({type(m).__name__})" for name, m in named_convs(model) if not isinstance(m, nnx.Conv)]
    if blocks:
        raise ValueError(
            f"{action} needs an uncompressed model, but these conv slots hold compressed blocks: "
            f"{', '.join(blocks)}; torchvision has no layers for them"
        )


def _entries(model: nnx.Module, action: str) -> dict[str, _Entry | None]:
    """Torch key -> variable and layout, in torchvision's key order.

    ``num_batches_tracked`` keys map to ``None``: torch has them, NNX does not.
    Raises ``ValueError`` if the model has compressed blocks, or parameters or
    batch statistics that no torch key would cover.
    """
    _check_uncompressed(model, action)
    entries: dict[str, _Entry | None] = {}
    for name, module in named_modules(model):
        for attr, suffix, axes in _LAYOUTS.get(type(module), ()):
            variable = getattr(module, attr)
            if variable is not None:
                entries[f"{name}.{suffix}"] = _Entry(variable, axes)
        if isinstance(module, nnx.BatchNorm):
            entries[f"{name}.{_BN_COUNTER}"] = None
    covered = {id(entry.variable) for entry in entries.values() if entry is not None}
    uncovered = [
        ".".join(map(str, path))
        for path, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Param | nnx.BatchStat) and id(node) not in covered
    ]
    if uncovered:
        raise ValueError(
            f"{action}: variables with no torchvision counterpart: {_listing(uncovered)}; "
            "only nnx.Conv, nnx.Linear and nnx.BatchNorm layers map to torch keys"
        )
    return entries


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown}, ... and {more} more" if more > 0 else shown


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "reading or writing .pth/.pt files needs PyTorch: pip install 'jaxcpd[torch]', "
            "or use a .safetensors file instead"
        ) from err
    return torch


def _as_numpy(value, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:  # bfloat16 has no numpy dtype
            value = value.float()
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"state dict entry {key!r} is not an array ({type(value).__name__})") from err
    if array.dtype == object:
        raise ValueError(f"state dict entry {key!r} is not a numeric array ({type(value).__name__})")
    return array


def _check_path(path, what: str) -> Path:
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"{what} must end in one of {', '.join(_SUFFIXES)}, got {str(path)!r}")
    return path


def _read_state_dict(source) -> dict[str, np.ndarray]:
    if isinstance(source, Mapping):
        state = source
    elif isinstance(source, str | os.PathLike):
        path = _check_path(source, "source file")
        if not path.is_file():
            raise ValueError(f"source file {str(path)!r} does not exist")
        if path.suffix.lower() == ".safetensors":
            from safetensors.flax import load_file  # unlike safetensors.numpy, it reads bfloat16

            state = load_file(path)
        else:
            state = _import_torch().load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, Mapping):
                raise ValueError(
                    f"{str(path)!r} holds a {type(state).__name__}, not a state dict (a mapping of names "
                    "to tensors); save model.state_dict(), not the model"
                )
    else:
        raise ValueError(
            "source must be a path to a .pth/.pt/.safetensors file or a mapping of names to arrays, "
            f"got {type(source).__name__}"
        )
    return {str(key): _as_numpy(value, str(key)) for key, value in state.items()}


def _mismatch_report(
    model: nnx.Module, missing: list[str], unexpected: list[str], misshaped: list[str]
) -> str:
    lines = [f"state dict does not match {type(model).__name__}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if all(key.startswith("module.") for key in unexpected):
            lines.append("  (keys start with 'module.': strip the DataParallel prefix first)")
    if misshaped:
        lines.append(f"  mis-shaped keys ({len(misshaped)}): {_listing(misshaped)}")
    return "\n".join(lines)


def load_torchvision(model: nnx.Module, source) -> nnx.Module:
    """Loads a torchvision state dict into a ported model, in place.

    Strict: every key the model needs must be present with torch's shape, and no
    other key may appear (``num_batches_tracked`` of batch-norm layers is accepted
    and ignored). Nothing is modified unless everything matches. Values are cast to
    each variable's dtype.

    Args:
      model: an uncompressed model such as ``resnet50(rngs=...)``; its conv slots
        must hold ``nnx.Conv`` layers.
      source: path to a ``.pth``/``.pt`` state dict (read with
        ``torch.load(..., weights_only=True)``), path to a ``.safetensors`` file,
        or a mapping of torchvision key names to arrays (numpy, JAX or torch).

    Returns:
      ``model``, for chaining.

    Example: torchvision's downloaded ``.pth`` files load as they are. When every
    weight comes from the file, random initialisation (slow on CPU: one compiled
    sampler per kernel shape) can be skipped by building the model abstractly; this
    suits ResNets, whereas VGG's dropout layers would keep an abstract RNG key::

      model = nnx.eval_shape(lambda: resnet50(rngs=nnx.Rngs(0)))
      load_torchvision(model, "resnet50-11ad3fa6.pth")
      model.eval()

    Raises:
      ValueError: on an unknown source type or suffix, a missing file, a
        non-mapping ``.pth`` payload, a model with compressed blocks, or keys that
        are missing, unexpected or mis-shaped (all listed, with shapes).
    """
    state = _read_state_dict(source)
    entries = _entries(model, "load_torchvision")
    missing, misshaped = [], []
    for key, entry in entries.items():
        if entry is None:
            continue
        expected = entry.torch_shape()
        if key not in state:
            missing.append(f"{key} (expected shape {expected})")
        elif state[key].shape != expected:
            misshaped.append(f"{key}: got {state[key].shape}, expected {expected}")
    unexpected = [f"{key} (shape {array.shape})" for key, array in state.items() if key not in entries]
    if missing or unexpected or misshaped:
        raise ValueError(_mismatch_report(model, missing, unexpected, misshaped))
    for key, entry in entries.items():
        if entry is not None:
            entry.variable.set_value(entry.from_torch(state[key]))
    return model


def torchvision_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The model's weights as a torchvision state dict of numpy arrays.

    Keys and layouts are torchvision's, in torchvision's order; batch-norm layers
    get ``num_batches_tracked = 0`` (int64), which torch only reads when
    ``momentum=None``.

    Args:
      model: an uncompressed ported model.

    Returns:
      Mapping of torch key to array, loadable with
      ``torch_model.load_state_dict({k: torch.from_numpy(v) ...})``.

    Raises:
      ValueError: if a conv slot holds a compressed block, or the model has
        variables with no torchvision counterpart.
    """
    return {
        key: np.zeros((), np.int64) if entry is None else entry.to_torch()
        for key, entry in _entries(model, "torchvision_state_dict").items()
    }


def save_torchvision(model: nnx.Module, path) -> None:
    """Writes the model's weights as a torchvision state dict.

    Args:
      model: an uncompressed ported model (conv slots hold ``nnx.Conv``).
      path: destination ending in ``.pth``/``.pt`` (``torch.save``; needs torch) or
        ``.safetensors`` (no torch needed). Its directory must exist.

    Raises:
      ValueError: on an unknown suffix, a missing directory, or a model that is
        not uncompressed (see :func:`torchvision_state_dict`).
    """
    path = _check_path(path, "path")
    if not path.parent.is_dir():
        raise ValueError(f"directory {str(path.parent)!r} of path does not exist")
    state = torchvision_state_dict(model)
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import save_file

        save_file(state, path)
    else:
        torch = _import_torch()
        torch.save({key: torch.from_numpy(array) for key, array in state.items()}, path)
