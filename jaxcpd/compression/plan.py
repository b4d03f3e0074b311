"""Compression plans: which method and ranks each conv layer gets (paper section 3, steps 1-3).

A plan is a ``dict`` mapping torchvision-style layer names (``"layer4.1.conv1"``) to
:class:`LayerPlan` entries. Layers not named in a plan are kept as they are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..decomp._checks import check_fraction, check_positive_int

METHODS = ("cpd", "cpd-epc", "tkd-cpd-epc", "tkd-cpd", "tucker2", "svd", "keep")
CP_METHODS = ("cpd", "cpd-epc")
TKD_METHODS = ("tkd-cpd", "tkd-cpd-epc")


@dataclass(frozen=True)
class LayerPlan:
    """How to compress one layer.

    Attributes:
      method: one of ``"cpd"``, ``"cpd-epc"`` (CP block), ``"tkd-cpd"``,
        ``"tkd-cpd-epc"`` (TKD-CPD block), ``"tucker2"`` (Tucker-2 block), ``"svd"``
        (1x1 convs and dense layers), ``"keep"``.
      rank: CP rank R (CP and TKD-CPD methods) or SVD rank.
      ranks: Tucker-2 ranks ``(R1, R2)`` (``tucker2`` and TKD-CPD methods).
      error_bound: relative error bound in (0, 1) choosing the Tucker-2 ranks
        (``tucker2``, TKD-CPD) or the SVD rank when those are not given.
    """

    method: str
    rank: int | None = None
    ranks: tuple[int, int] | None = None
    error_bound: float | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.rank is not None:
            object.__setattr__(self, "rank", check_positive_int(self.rank, "rank"))
        if self.ranks is not None:
            if not isinstance(self.ranks, tuple | list) or len(self.ranks) != 2:
                raise ValueError(f"ranks must be a pair (R1, R2), got {self.ranks!r}")
            pair = tuple(check_positive_int(r, f"ranks[{i}]") for i, r in enumerate(self.ranks))
            object.__setattr__(self, "ranks", pair)
        if self.error_bound is not None:
            object.__setattr__(self, "error_bound", check_fraction(self.error_bound, "error_bound"))
        m = self.method
        needs_rank = m in CP_METHODS or m in TKD_METHODS or (m == "svd" and self.error_bound is None)
        if needs_rank and self.rank is None:
            raise ValueError(f"method {m!r} needs rank")
        if (m in TKD_METHODS or m == "tucker2") and (self.ranks is None) == (self.error_bound is None):
            raise ValueError(f"method {m!r} needs exactly one of ranks=(R1, R2) or error_bound")
        if m in CP_METHODS and (self.ranks is not None or self.error_bound is not None):
            raise ValueError(f"method {m!r} takes rank only, not ranks or error_bound")
        if m == "svd" and self.ranks is not None:
            raise ValueError("method 'svd' takes rank or error_bound, not ranks")
        if m == "svd" and self.rank is not None and self.error_bound is not None:
            raise ValueError("method 'svd' needs exactly one of rank or error_bound")
        if m == "tucker2" and self.rank is not None:
            raise ValueError("method 'tucker2' takes ranks or error_bound, not rank")
        if m == "keep" and (self.rank, self.ranks, self.error_bound) != (None, None, None):
            raise ValueError("method 'keep' takes no ranks")

    def to_dict(self) -> dict:
        """Plain-data form (for JSON/YAML), omitting unset fields."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if "ranks" in out:
            out["ranks"] = list(out["ranks"])
        return out


def plan_from_dict(data) -> dict[str, LayerPlan]:
    """Builds a plan from ``{name: {"method": ..., "rank": ...}}`` plain data.

    Args:
      data: mapping of layer names to LayerPlan fields (or to a method string).

    Returns:
      ``dict[str, LayerPlan]``.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a plan must be a mapping of layer names to entries, got {type(data).__name__}")
    plan = {}
    for name, entry in data.items():
        if isinstance(entry, str):
            entry = {"method": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"plan entry {name!r} must be a mapping, got {entry!r}")
        unknown = set(entry) - {"method", "rank", "ranks", "error_bound"}
        if unknown:
            raise ValueError(
                f"plan entry {name!r} has unknown keys {sorted(unknown)}; "
                "valid keys: method, rank, ranks, error_bound"
            )
        if "method" not in entry:
            raise ValueError(f"plan entry {name!r} needs a method")
        ranks = entry.get("ranks")
        try:
            plan[str(name)] = LayerPlan(
                entry["method"],
                entry.get("rank"),
                tuple(ranks) if ranks is not None else None,
                entry.get("error_bound"),
            )
        except ValueError as err:
            raise ValueError(f"plan entry {name!r}: {err}") from err
    return plan


def plan_to_dict(plan: dict[str, LayerPlan]) -> dict:
    """Plain-data form of a plan."""
    return {name: entry.to_dict() for name, entry in plan.items()}


def save_plan(plan: dict[str, LayerPlan], path) -> Path:
    """Writes a plan as YAML (``.yaml``/``.yml``) or JSON (anything else).

    Args:
      plan: ``dict[str, LayerPlan]``.
      path: output file.

    Returns:
      The path written.
    """
    path = Path(path)
    data = plan_to_dict(plan)
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_plan(path) -> dict[str, LayerPlan]:
    """Reads a plan written by :func:`save_plan` (YAML or JSON).

    Args:
      path: plan file.

    Returns:
      ``dict[str, LayerPlan]``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"plan file not found: {path}")
    text = path.read_text()
    is_yaml = path.suffix in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"plan file {path} is not valid {'YAML' if is_yaml else 'JSON'}: {err}") from err
    return plan_from_dict(data)
