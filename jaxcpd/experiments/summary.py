"""Results of a run: the method comparison table, and re-rendering a run directory's reports and plots.

:class:`RunSummary` is what :func:`jaxcpd.experiments.run_experiment` returns and
saves as ``summary.json``; :func:`render_run` (the ``jaxcpd report`` command)
rebuilds every table and plot of a run directory from its JSON files alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..compression import CompressionReport
from .rank_search import RankSearchResult, plot_rank_search


@dataclasses.dataclass(frozen=True)
class MethodResult:
    """One compared method of a run.

    Attributes:
      method: compression method of the ``D x D`` convs.
      layers: number of compressed layers.
      params_reduction, flops_reduction: whole model, dense / compressed.
      top1_before_finetune: top-1 right after the decomposition.
      top1, top5: after fine-tuning.
      mean_rel_error: mean relative kernel error of the compressed layers.
      mean_sensitivity_cpd: mean eq. 5 sensitivity of the layers' CPDs before EPC.
      mean_sensitivity: mean eq. 5 sensitivity of the blocks' CPDs (after EPC for EPC
        methods; ``None`` when no layer has a CPD).
      mean_max_intensity: mean over layers of the largest rank-1 intensity (eq. 3 terms).
      decompose_seconds, finetune_seconds: wall times.
      forward_ms: median forward time of a ``speed_batch`` batch; ``None`` if not measured.
      speedup: dense forward time / compressed forward time, same run.
    """

    method: str
    layers: int
    params_reduction: float
    flops_reduction: float
    top1_before_finetune: float
    top1: float
    top5: float
    mean_rel_error: float | None
    mean_sensitivity_cpd: float | None
    mean_sensitivity: float | None
    mean_max_intensity: float | None
    decompose_seconds: float
    finetune_seconds: float
    forward_ms: float | None
    speedup: float | None


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """The dense model and every compared method of one run.

    Attributes:
      name: experiment name.
      data: data set name.
      arch: architecture spec of the dense model.
      input_shape: input shape FLOPs were counted for.
      params: dense parameter count.
      top1, top5: dense model accuracy.
      baseline_seconds: baseline training time (0 when not trained).
      forward_ms: dense forward time of a ``speed_batch`` batch.
      speed_batch: images per timed forward pass.
      methods: the :class:`MethodResult` rows.
      seconds: wall time of the whole run.
    """

    name: str
    data: str
    arch: dict
    input_shape: tuple[int, ...]
    params: int
    top1: float
    top5: float
    baseline_seconds: float
    forward_ms: float | None
    speed_batch: int
    methods: list[MethodResult]
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunSummary:
        data = dict(data)
        data["methods"] = [MethodResult(**m) for m in data["methods"]]
        data["input_shape"] = tuple(data["input_shape"])
        return cls(**data)

    def save(self, run_dir) -> Path:
        """Writes ``summary.json`` into ``run_dir`` (:func:`render_run` writes the tables and plots)."""
        path = Path(run_dir) / "summary.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run_dir) -> RunSummary:
        """Reads ``summary.json`` of a run directory."""
        path = Path(run_dir) / "summary.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a jaxcpd run directory (no summary.json)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: malformed run summary ({error})") from None

    def table(self) -> str:
        """Markdown table: one row for the dense model and one per method."""
        arch = self.arch.get("name", "?")
        lines = [
            f"{self.name}: {arch} on {self.data}, FLOPs for input {tuple(self.input_shape)}, "
            f"speed on a batch of {self.speed_batch}",
            "",
            "| method | params | FLOPs | top-1 before FT | top-1 after FT | top-5 | mean sensitivity "
            "(CPD -> EPC) | mean max intensity | CPU speedup | decompose s | fine-tune s |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| dense | {self.params / 1e6:.2f} M | 1.00x | | {self.top1:.4f} | {self.top5:.4f} "
            "| | | 1.00x | | |",
        ]
        for m in self.methods:
            lines.append(
                f"| {m.method} | {m.params_reduction:.2f}x fewer | {m.flops_reduction:.2f}x fewer "
                f"| {m.top1_before_finetune:.4f} | {m.top1:.4f} | {m.top5:.4f} "
                f"| {_sensitivity(m)} | {_fmt(m.mean_max_intensity)} "
                f"| {_fmt(m.speedup, '{:.2f}x')} | {m.decompose_seconds:.0f} | {m.finetune_seconds:.0f} |"
            )
        lines += [
            "",
            f"Total time {self.seconds / 60:.1f} min (baseline training {self.baseline_seconds:.0f} s).",
        ]
        return "\n".join(lines)


def _fmt(value, spec: str = "{:.3g}") -> str:
    return "" if value is None else spec.format(value)


def _sensitivity(m: MethodResult) -> str:
    if m.mean_sensitivity is None:
        return ""
    if m.mean_sensitivity_cpd is None or m.mean_sensitivity_cpd == m.mean_sensitivity:
        return _fmt(m.mean_sensitivity)
    return f"{m.mean_sensitivity_cpd:.3g} -> {m.mean_sensitivity:.3g}"


def _eval_curve(metrics_file: Path) -> tuple[list[int], list[float]]:
    """``(steps, top1)`` of the eval records of a ``metrics.jsonl`` (the last run after a resume)."""
    records = {}
    if metrics_file.is_file():
        for line in metrics_file.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "eval":
                records[record["step"]] = record["top1"]
    steps = sorted(records)
    return steps, [records[s] for s in steps]


def plot_summary(summary: RunSummary, reports: dict[str, CompressionReport], curves: dict, path) -> Path:
    """Three panels: top-1 before/after fine-tuning, per-layer sensitivity, fine-tuning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = [m.method for m in summary.methods]
    xs = range(len(names))
    ax = axes[0]
    ax.bar(
        [x - 0.2 for x in xs],
        [m.top1_before_finetune for m in summary.methods],
        0.4,
        label="after decomposition",
    )
    ax.bar([x + 0.2 for x in xs], [m.top1 for m in summary.methods], 0.4, label="after fine-tuning")
    ax.axhline(summary.top1, color="k", linestyle="--", label=f"dense {summary.top1:.3f}")
    ax.set_xticks(
        list(xs),
        [f"{n}\n{m.flops_reduction:.1f}x FLOPs" for n, m in zip(names, summary.methods, strict=True)],
    )
    ax.set_ylabel("top-1")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy at the same FLOP budget")
    ax.legend(loc="lower right", fontsize=8)
    ax = axes[1]
    for method, report in reports.items():
        rows = [r for r in report.layers if r.sensitivity_after is not None]
        if rows:
            ax.semilogy(range(len(rows)), [r.sensitivity_after for r in rows], marker="o", label=method)
            if any(r.sensitivity_before != r.sensitivity_after for r in rows):
                ax.semilogy(
                    range(len(rows)),
                    [r.sensitivity_before for r in rows],
                    linestyle=":",
                    color=ax.lines[-1].get_color(),
                    label=f"{method} before EPC",
                )
    ax.set_xlabel("compressed layer (forward order)")
    ax.set_ylabel("sensitivity (eq. 5)")
    ax.set_title("Sensitivity of each layer's CPD")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[2]
    for m in summary.methods:  # step 0: right after the decomposition
        steps, top1 = curves.get(m.method, ([], []))
        ax.plot([0, *steps], [m.top1_before_finetune, *top1], marker="o", label=m.method)
    ax.axhline(summary.top1, color="k", linestyle="--", label="dense")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("test top-1")
    ax.set_title("Fine-tuning")
    ax.legend(fontsize=8)
    fig.suptitle(f"{summary.name}: {summary.arch.get('name')} on {summary.data}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_run(run_dir) -> dict[str, Path]:
    """Re-renders a run directory's tables and plots from its JSON files.

    Writes ``summary.md``, ``summary.png``, each method's ``report.md`` and
    ``report.csv`` and, when a rank search ran, ``rank_search.png`` (paper Fig. 6:
    probe accuracy vs layer FLOPs of the ``D x D`` convs, one series per method).

    Args:
      run_dir: a directory written by :func:`jaxcpd.experiments.run_experiment`.

    Returns:
      The written files by kind.
    """
    run_dir = Path(run_dir)
    summary = RunSummary.load(run_dir)
    written = {"summary_md": run_dir / "summary.md"}
    written["summary_md"].write_text(summary.table() + "\n")
    reports, curves, searches = {}, {}, {}
    for m in summary.methods:
        method_dir = run_dir / m.method
        report_file = method_dir / "report.json"
        if report_file.is_file():
            report = CompressionReport.load_json(report_file)
            reports[m.method] = report
            (method_dir / "report.md").write_text(report.table() + "\n")
            report.save_csv(method_dir / "report.csv")
        curves[m.method] = _eval_curve(method_dir / "finetune" / "metrics.jsonl")
        search_file = method_dir / f"rank_search_{m.method}.json"
        if search_file.is_file():
            searches[m.method] = RankSearchResult.from_dict(json.loads(search_file.read_text()))
    written["summary_png"] = plot_summary(summary, reports, curves, run_dir / "summary.png")
    if searches:
        path = run_dir / "rank_search.png"
        plot_rank_search(searches, path)
        written["rank_search_png"] = path
    return written
