"""Saving and loading compressed models with orbax, without decomposing again.

A saved model is a directory with ``model.json`` (the base architecture and the
plan with its concrete ranks) and ``state/`` (an orbax checkpoint of the NNX
state). Loading rebuilds the architecture, puts blocks of the saved ranks in the
planned slots, and restores every array from the checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from .. import models
from ..models import get_submodule, set_submodule
from .plan import CP_METHODS, TKD_METHODS, LayerPlan, plan_from_dict, plan_to_dict
from .surgery import build_block, check_target

ARCHITECTURES = {
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "vgg16": models.vgg16,
}


def build_model(arch: dict, *, seed: int = 0):
    """Builds a port from an architecture spec such as ``{"name": "resnet18", "num_classes": 10}``.

    Args:
      arch: ``name`` (one of ``ARCHITECTURES``) and the constructor's keyword arguments.
      seed: seed of the random initialisation.

    Returns:
      The NNX model.
    """
    if not isinstance(arch, dict) or "name" not in arch:
        raise ValueError(f"arch must be a dict with a 'name' key, got {arch!r}")
    kwargs = {k: v for k, v in arch.items() if k != "name"}
    if arch["name"] not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch['name']!r}; valid: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch["name"]](**kwargs, rngs=nnx.Rngs(seed))


def _placeholder_arrays(entry: LayerPlan, kernel_shape, dtype) -> dict:
    """Zero arrays with the shapes the entry's block is built from."""
    *spatial, s, t = kernel_shape
    d2 = math.prod(spatial) if spatial else 1
    z = lambda *shape: jnp.zeros(shape, dtype)  # noqa: E731
    if entry.method == "svd":
        return {"U": z(s, entry.rank), "V": z(t, entry.rank)}
    if entry.method in CP_METHODS:
        return {"factors": (z(d2, entry.rank), z(s, entry.rank), z(t, entry.rank))}
    r1, r2 = entry.ranks
    if entry.method in TKD_METHODS:
        r = entry.rank
        return {"U": z(s, r1), "V": z(t, r2), "factors": (z(d2, r), z(r1, r), z(r2, r))}
    return {"core": z(d2, r1, r2), "U": z(s, r1), "V": z(t, r2)}


def apply_structure(model, plan: dict[str, LayerPlan]):
    """Replaces planned layers by blocks of the planned ranks, with placeholder weights.

    Args:
      model: the base model (modified in place).
      plan: a plan with concrete ranks (no error bounds), e.g. ``report.concrete_plan()``.

    Returns:
      ``model``.
    """
    for name, entry in plan.items():
        if entry.method == "keep":
            continue
        if entry.error_bound is not None:
            raise ValueError(f"plan entry {name!r} has an error bound; a saved plan needs concrete ranks")
        module = get_submodule(model, name)
        check_target(name, module, entry)
        arrays = _placeholder_arrays(entry, module.kernel.shape, module.kernel.dtype)
        bias = None if module.bias is None else jnp.zeros_like(module.bias[...])
        set_submodule(model, name, build_block(module, entry, arrays, bias))
    return model


def save_compressed(path, model, plan: dict[str, LayerPlan], *, arch: dict) -> Path:
    """Saves a compressed model so :func:`load_compressed` can rebuild it in a fresh process.

    Args:
      path: output directory (created; must not hold a saved model already).
      model: the compressed model.
      plan: its plan with concrete ranks (``report.concrete_plan()``).
      arch: the base architecture spec (see :func:`build_model`).

    Returns:
      The directory.
    """
    path = Path(path).absolute()
    nnx.eval_shape(lambda: build_model(arch))  # validates the spec (no weights) before anything is written
    if any(entry.error_bound is not None for entry in plan.values()):
        raise ValueError("plan has error bounds; pass report.concrete_plan() so the ranks are saved")
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.json").write_text(json.dumps({"arch": arch, "plan": plan_to_dict(plan)}, indent=2) + "\n")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / "state", nnx.state(model))
    checkpointer.wait_until_finished()
    return path


def load_compressed(path):
    """Loads a model written by :func:`save_compressed` (no decomposition is run).

    Args:
      path: the saved directory.

    Returns:
      The compressed NNX model with the saved weights and batch statistics.
    """
    path = Path(path).absolute()
    meta_file = path / "model.json"
    if not meta_file.is_file():
        raise ValueError(f"no saved compressed model in {path} (model.json missing)")
    meta = json.loads(meta_file.read_text())
    plan = plan_from_dict(meta["plan"])

    def skeleton():
        return apply_structure(build_model(meta["arch"]), plan)

    abstract = nnx.eval_shape(skeleton)
    graphdef, abstract_state = nnx.split(abstract)
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    state = ocp.StandardCheckpointer().restore(path / "state", target)
    return nnx.merge(graphdef, state)
