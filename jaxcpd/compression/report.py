"""Per-layer compression report: errors, sensitivity, params and FLOPs before and after."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .plan import LayerPlan


def _arrow(before, after) -> str:
    return "" if before is None else f"{before:.3g} -> {after:.3g}"


@dataclass
class LayerReport:
    """One compressed layer.

    ``sensitivity_*`` and ``max_intensity_*`` (eq. 5, eq. 3's terms) are those of the
    CPD before and after EPC (equal for methods without EPC; ``None`` for methods
    without a CPD). ``seconds`` is the decomposition time; layers decomposed together
    in one vmapped batch share their batch's time equally.
    """

    name: str
    kernel_shape: tuple[int, ...]
    method: str
    rank: int | None
    ranks: tuple[int, int] | None
    rel_error: float
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    seconds: float
    sensitivity_before: float | None = None
    sensitivity_after: float | None = None
    max_intensity_before: float | None = None
    max_intensity_after: float | None = None
    merged: tuple[bool, bool] | None = None


@dataclass
class CompressionReport:
    """Report of :func:`jaxcpd.compress`: one row per layer and whole-model totals.

    Attributes:
      layers: the :class:`LayerReport` rows, in plan order.
      input_shape: the input shape FLOPs were counted for.
      params_before, params_after: whole-model parameter counts.
      flops_before, flops_after: whole-model multiply-adds for ``input_shape``.
    """

    layers: list[LayerReport]
    input_shape: tuple[int, ...]
    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    extra: dict = field(default_factory=dict)

    @property
    def params_reduction(self) -> float:
        """``params_before / params_after`` of the whole model."""
        return self.params_before / max(self.params_after, 1)

    @property
    def flops_reduction(self) -> float:
        """``flops_before / flops_after`` of the whole model."""
        return self.flops_before / max(self.flops_after, 1)

    def concrete_plan(self) -> dict:
        """The plan with the ranks actually used (error bounds resolved), e.g. for saving."""
        return {
            r.name: LayerPlan(r.method, rank=r.rank if r.method != "tucker2" else None, ranks=r.ranks)
            for r in self.layers
        }

    def table(self) -> str:
        """Markdown table of the layers followed by the totals."""
        head = (
            "| layer | kernel | method | ranks | rel. error | sensitivity CPD -> EPC "
            "| max intensity CPD -> EPC | params | MFLOPs | s |"
        )
        lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.layers:
            ranks = ", ".join(str(v) for v in ((r.rank,) if r.rank else ()) + (r.ranks or ()))
            kernel = "x".join(map(str, r.kernel_shape))
            lines.append(
                f"| {r.name} | {kernel} | {r.method} | {ranks} | {r.rel_error:.4f} "
                f"| {_arrow(r.sensitivity_before, r.sensitivity_after)} "
                f"| {_arrow(r.max_intensity_before, r.max_intensity_after)} "
                f"| {r.params_before} -> {r.params_after} "
                f"| {r.flops_before / 1e6:.2f} -> {r.flops_after / 1e6:.2f} | {r.seconds:.2f} |"
            )
        lines.append("")
        lines.append(
            f"Whole model: params {self.params_before:,} -> {self.params_after:,} "
            f"({self.params_reduction:.2f}x), FLOPs {self.flops_before:,} -> {self.flops_after:,} "
            f"({self.flops_reduction:.2f}x) for input {tuple(self.input_shape)}; "
            f"decomposition time {sum(r.seconds for r in self.layers):.1f} s"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """Plain data (JSON-ready)."""
        out = asdict(self)
        out["params_reduction"] = self.params_reduction
        out["flops_reduction"] = self.flops_reduction
        return out

    def save_json(self, path) -> Path:
        """Writes the report as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def to_csv(self) -> str:
        """The layer rows as CSV text."""
        buf = io.StringIO()
        names = [f.name for f in fields(LayerReport)]
        writer = csv.DictWriter(buf, fieldnames=names)
        writer.writeheader()
        for row in self.layers:
            data = asdict(row)
            data["kernel_shape"] = "x".join(map(str, row.kernel_shape))
            data["ranks"] = "" if row.ranks is None else "x".join(map(str, row.ranks))
            writer.writerow(data)
        return buf.getvalue()

    def save_csv(self, path) -> Path:
        """Writes the layer rows as CSV."""
        path = Path(path)
        path.write_text(self.to_csv())
        return path

    @classmethod
    def load_json(cls, path) -> CompressionReport:
        """Reads a report written by :meth:`save_json`."""
        data = json.loads(Path(path).read_text())
        data.pop("params_reduction", None)
        data.pop("flops_reduction", None)
        layers = []
        for row in data.pop("layers"):
            row["kernel_shape"] = tuple(row["kernel_shape"])
            for key in ("ranks", "merged"):
                row[key] = None if row[key] is None else tuple(row[key])
            layers.append(LayerReport(**row))
        data["input_shape"] = tuple(data["input_shape"])
        return cls(layers=layers, **data)
