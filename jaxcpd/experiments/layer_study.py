"""Single-layer study: CPD vs CPD-EPC over a range of ranks (the paper's Fig. 2 and Fig. 4 right).

For one convolution kernel and each CP rank R, :func:`layer_study` runs CP-ALS and
then EPC at the ALS error (:func:`jaxcpd.cpd_epc`) and records, for both
decompositions, the relative error, the intensity ``||a_r o b_r o c_r||_F`` of every
rank-1 term, their sum of squares (the degeneracy measure of eq. 3) and the
sensitivity (Lemma 1, eq. 5). :class:`LayerStudy` saves the numbers (JSON and a
Markdown table) and the two plots of Fig. 2: intensities of the sorted terms (as in
Fig. 2 left and Fig. 4 right) and eq. 3 / eq. 5 vs rank (Fig. 2 right).

:func:`read_kernel` reads one conv kernel from a torchvision-style state dict and
:func:`parse_ranks` parses the ``--ranks`` specification of ``jaxcpd decompose``.

References:
  Phan et al., "Stable Low-rank Tensor Decomposition for Compression of
  Convolutional Neural Network", ECCV 2020, Fig. 2, Fig. 4, eq. 3 and eq. 5.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxcpd.decomp import (
    cp_balance,
    cp_intensities,
    cp_reconstruct,
    cp_sensitivity,
    cpd_epc,
    kernel_to_tensor,
    tucker2,
)
from jaxcpd.decomp._checks import check_key

METHODS = ("cpd-epc", "tkd-cpd-epc")
_FORMAT = "jaxcpd.layer_study"
_VERSION = 1
_INT = re.compile(r"\s*\d+\s*")


# --------------------------------------------------------------------------- ranks


def parse_ranks(spec: str) -> tuple[int, ...]:
    """Parses a rank specification: ``"10:500:10"``, ``"10,20,50"`` or ``"30"``.

    ``start:stop:step`` includes ``stop`` when the step lands on it. Lists are
    returned sorted, without duplicates.

    Raises:
      ValueError: naming ``spec``, for anything else: an empty or non-integer part,
        a rank < 1, ``step <= 0`` or ``stop < start``.
    """
    if not isinstance(spec, str):
        raise ValueError(f"ranks must be a string such as '10:500:10', got {spec!r}")

    def fail(why):
        return ValueError(f"bad ranks {spec!r}: {why}; use start:stop:step (e.g. 10:500:10), 10,20,50 or 30")

    def integer(part):
        if not _INT.fullmatch(part):
            raise fail(f"{part.strip()!r} is not a non-negative integer")
        return int(part)

    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise fail("a range needs exactly start:stop:step")
        start, stop, step = (integer(p) for p in parts)
        if start < 1:
            raise fail(f"start must be >= 1, got {start}")
        if step < 1:
            raise fail(f"step must be >= 1, got {step}")
        if stop < start:
            raise fail(f"stop {stop} < start {start}")
        return tuple(range(start, stop + 1, step))
    ranks = [integer(p) for p in spec.split(",")]
    if min(ranks) < 1:
        raise fail("ranks must be >= 1")
    return tuple(sorted(set(ranks)))


def _check_ranks(ranks) -> tuple[int, ...]:
    if isinstance(ranks, int | np.integer) and not isinstance(ranks, bool):
        ranks = (ranks,)
    if not isinstance(ranks, tuple | list) or not ranks:
        raise ValueError(f"ranks must be a non-empty sequence of positive ints, got {ranks!r}")
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int | np.integer) or r < 1:
            raise ValueError(f"ranks must be positive ints, got {r!r} in {ranks!r}")
    return tuple(sorted({int(r) for r in ranks}))


# --------------------------------------------------------------------------- weights


def _groups_from_state(state: dict, key: str, weight: np.ndarray, ordered: bool) -> int:
    """Best guess of a conv's ``groups`` from the state dict (a state dict does not store it).

    Depthwise: one input channel, several outputs, and not the first 4-D weight.
    Grouped (``ordered`` sources only, whose keys follow module order): the last
    batch-norm (``running_mean``) or 4-D weight before ``key`` in the same parent
    module has ``C != I`` channels with ``C % I == 0``.
    """
    out_ch, in_ch = weight.shape[:2]
    names = list(state)
    before = names[: names.index(key)]
    if in_ch == 1 and out_ch > 1 and any(state[k].ndim == 4 for k in before):
        return out_ch
    if not ordered:
        return 1
    parent = key.rsplit(".", 2)[0] + "." if key.count(".") >= 2 else ""
    for k in reversed(before):
        if not k.startswith(parent):
            break
        a = state[k]
        if (a.ndim == 1 and k.endswith(".running_mean")) or a.ndim == 4:
            channels = a.shape[0]
            return channels // in_ch if channels != in_ch and channels % in_ch == 0 else 1
    return 1


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def read_kernel(weights, layer: str, *, groups: int | None = None) -> np.ndarray:
    """Reads one conv kernel from a torchvision-style state dict, as an HWIO float32 array.

    Args:
      weights: path to a ``.pth``/``.pt`` (read with ``torch.load(weights_only=True)``),
        ``.safetensors`` or ``.npz`` file mapping ``"<layer>.weight"`` to an OIHW array.
      layer: torchvision module name, e.g. ``"layer4.1.conv1"`` (a trailing
        ``".weight"`` is accepted).
      groups: the conv's ``groups`` if known. A state dict does not record it, so by
        default it is guessed (see below); pass ``groups=1`` to override a wrong guess.

    Returns:
      ``(D, D, S, T)`` float32 kernel (Flax HWIO), ready for :func:`layer_study`.

    Raises:
      FileNotFoundError: ``weights`` does not exist.
      ValueError: unknown suffix; ``layer`` not in the file (the message names the
        closest layer names and the number of 4-D weights); a weight that is not 4-D;
        a grouped or depthwise conv, which a CP block cannot represent. Grouping is
        detected when ``groups != 1`` is passed, or guessed for ``groups=None``: a
        single input channel in any 4-D weight but the file's first one
        (depthwise); and, for ``.pth``/``.pt``/``.npz`` files (whose keys keep
        module order; ``.safetensors`` sorts them), an input channel count that
        divides, but differs from, that of the preceding batch norm or conv of the
        same parent module (as in ResNeXt).
    """
    path = Path(weights)
    suffix = path.suffix.lower()
    if suffix not in (".pth", ".pt", ".safetensors", ".npz"):
        raise ValueError(f"weights must be a .pth, .pt, .safetensors or .npz file, got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if not isinstance(layer, str) or not layer:
        raise ValueError(f"layer must be a module name such as 'layer4.1.conv1', got {layer!r}")
    layer = layer.removesuffix(".weight")
    if suffix == ".npz":
        state = _read_npz(path)
    else:
        from jaxcpd.models.torchvision_io import _read_state_dict  # torch and flax, only when needed

        state = _read_state_dict(path)
    state = {k: np.asarray(v) for k, v in state.items()}
    key = f"{layer}.weight"
    if key not in state:
        convs = [k.removesuffix(".weight") for k, v in state.items() if k.endswith(".weight") and v.ndim == 4]
        close = difflib.get_close_matches(layer, convs, n=3, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else "no close name"
        raise ValueError(
            f"layer {layer!r} not found in {str(path)!r} ({hint}); the file has {len(convs)} 4-D conv "
            f"weights, e.g. {', '.join(convs[:5]) or 'none'}"
        )
    weight = state[key]
    if weight.ndim != 4:
        raise ValueError(
            f"layer {layer!r} is not a 2-D convolution: its weight has shape {weight.shape}, not 4-D OIHW"
        )
    if groups is None:
        groups = _groups_from_state(state, key, weight, ordered=suffix != ".safetensors")
        how = "(guessed from the state dict; pass groups=1 if the conv is not grouped)"
    else:
        how = "(as passed)"
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if groups != 1:
        raise ValueError(
            f"layer {layer!r} (weight shape {weight.shape}) is a grouped convolution with groups={groups} "
            f"{how}; CP blocks only replace ungrouped convolutions"
        )
    return np.ascontiguousarray(np.transpose(weight.astype(np.float32), (2, 3, 1, 0)))


# --------------------------------------------------------------------------- study


@dataclasses.dataclass(frozen=True)
class RankRecord:
    """CPD and CPD-EPC at one rank. ``*_cpd`` refer to CP-ALS, ``*_epc`` to EPC at its error.

    Attributes:
      rank: CP rank R.
      rel_error_cpd, rel_error_epc: ``||K - K^||_F / ||K||_F`` against the kernel.
      intensity_sq_cpd, intensity_sq_epc: sum of squared intensities, eq. 3.
      sensitivity_cpd, sensitivity_epc: sensitivity, eq. 5, of the scale-balanced factors.
      intensities_cpd, intensities_epc: the R intensities ``||a_r o b_r o c_r||_F``, descending.
      als_iters, epc_iters: sweeps run by CP-ALS and EPC.
      seconds: wall time of both.
    """

    rank: int
    rel_error_cpd: float
    rel_error_epc: float
    intensity_sq_cpd: float
    intensity_sq_epc: float
    sensitivity_cpd: float
    sensitivity_epc: float
    intensities_cpd: tuple[float, ...]
    intensities_epc: tuple[float, ...]
    als_iters: int
    epc_iters: int
    seconds: float


def _record_from_json(d: dict) -> RankRecord:
    fields = {f.name for f in dataclasses.fields(RankRecord)}
    if set(d) != fields:
        raise ValueError(f"rank record has fields {sorted(d)}, expected {sorted(fields)}")
    d = dict(d)
    d["intensities_cpd"] = tuple(d["intensities_cpd"])
    d["intensities_epc"] = tuple(d["intensities_epc"])
    return RankRecord(**d)


@dataclasses.dataclass(frozen=True)
class LayerStudy:
    """Result of :func:`layer_study`: one :class:`RankRecord` per rank, ascending.

    Attributes:
      name: layer name (for titles), or ``None``.
      kernel_shape: HWIO shape ``(D, D, S, T)``.
      method: ``"cpd-epc"`` or ``"tkd-cpd-epc"``.
      tucker_ranks: ``(R1, R2)`` for ``"tkd-cpd-epc"``, else ``None``.
      tucker_rel_error: relative error of the Tucker-2 step alone, or ``None``.
      records: tuple of :class:`RankRecord`.
    """

    name: str | None
    kernel_shape: tuple[int, ...]
    method: str
    tucker_ranks: tuple[int, int] | None
    tucker_rel_error: float | None
    records: tuple[RankRecord, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(r.rank for r in self.records)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        return {"format": _FORMAT, "version": _VERSION, **d}

    @classmethod
    def from_json(cls, d: dict) -> LayerStudy:
        if not isinstance(d, dict) or d.get("format") != _FORMAT or d.get("version") != _VERSION:
            raise ValueError(f"not a {_FORMAT} version {_VERSION} record")
        try:
            tr = d["tucker_ranks"]
            return cls(
                name=d["name"],
                kernel_shape=tuple(d["kernel_shape"]),
                method=d["method"],
                tucker_ranks=None if tr is None else tuple(tr),
                tucker_rel_error=d["tucker_rel_error"],
                records=tuple(_record_from_json(r) for r in d["records"]),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed {_FORMAT} record: {err!r}") from err

    def title(self) -> str:
        shape = "x".join(map(str, self.kernel_shape))
        tucker = "" if self.tucker_ranks is None else f", Tucker-2 ranks {self.tucker_ranks}"
        return f"{self.name or 'kernel'} ({shape}), {self.method}{tucker}"

    def markdown(self) -> str:
        """Markdown table: rank | CPD error | EPC error | eq. 3 CPD -> EPC | eq. 5 CPD -> EPC."""
        lines = [f"{self.title()}.", ""]
        if self.tucker_rel_error is not None:
            lines += [f"Tucker-2 relative error alone: {self.tucker_rel_error:.4f}.", ""]
        lines += [
            "| rank | CPD error | EPC error | eq.3 CPD -> EPC | eq.5 CPD -> EPC |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.rank} | {r.rel_error_cpd:.4f} | {r.rel_error_epc:.4f} | "
            f"{r.intensity_sq_cpd:.4g} -> {r.intensity_sq_epc:.4g} | "
            f"{r.sensitivity_cpd:.4g} -> {r.sensitivity_epc:.4g} |"
            for r in self.records
        ]
        return "\n".join(lines) + "\n"

    def save(self, out_dir) -> dict[str, Path]:
        """Writes ``study.json``, ``intensities.png``, ``vs_rank.png`` and ``study.md`` to ``out_dir``.

        Returns:
          ``{"json", "intensities", "vs_rank", "markdown"}`` -> written path.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "json": out / "study.json",
            "intensities": out / "intensities.png",
            "vs_rank": out / "vs_rank.png",
            "markdown": out / "study.md",
        }
        paths["json"].write_text(json.dumps(self.to_json(), indent=1) + "\n")
        plot_intensities(self, paths["intensities"])
        plot_vs_rank(self, paths["vs_rank"])
        paths["markdown"].write_text(self.markdown())
        return paths

    @classmethod
    def load(cls, out_dir) -> LayerStudy:
        """Reads ``study.json`` written by :meth:`save` (a directory or the file itself)."""
        path = Path(out_dir)
        if path.is_dir():
            path = path / "study.json"
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} does not exist")
        return cls.from_json(json.loads(path.read_text()))


def rank_key(key, rank: int):
    """The ``jax.random`` key :func:`layer_study` uses at ``rank``: ``fold_in(key, rank)``."""
    return jax.random.fold_in(key, rank)


@jax.jit
def _metrics(kernel_tensor, factors):
    factors = cp_balance(factors)
    err = jnp.linalg.norm(kernel_tensor - cp_reconstruct(factors)) / jnp.linalg.norm(kernel_tensor)
    return err, cp_intensities(factors), cp_sensitivity(factors)


def _stats(kernel_tensor, factors):
    """Error against the kernel, eq. 3, eq. 5 and sorted intensities of the balanced factors."""
    err, inten, sens = _metrics(kernel_tensor, tuple(factors))
    inten = np.sort(np.asarray(inten, np.float64))[::-1]
    return float(err), float(np.sum(inten**2)), float(sens), tuple(map(float, inten))


def layer_study(
    kernel,
    ranks,
    *,
    method: str = "cpd-epc",
    tucker_ranks=None,
    key=None,
    als_kwargs=None,
    epc_kwargs=None,
    progress: bool = False,
    name: str | None = None,
) -> LayerStudy:
    """CPD vs CPD-EPC of one conv kernel at several ranks (Fig. 2; Fig. 4 right).

    For each rank: CP-ALS, then EPC bounded by the ALS error (:func:`jaxcpd.cpd_epc`).
    Both are scale-balanced (``cp_balance``, which leaves the tensor and eq. 3
    unchanged and minimises each term's share of eq. 5) before measuring, so the
    sensitivity comparison is fair.

    With ``method="tkd-cpd-epc"`` the kernel first gets a Tucker-2 decomposition
    ``K ~= G x_2 U x_3 V`` (section 2.4; computed once) and the study runs on the
    core ``G``; errors are measured against the kernel and the metrics of
    ``[[A, U B, V C]]`` are reported (the same as the core's, U and V being
    orthonormal), as in :func:`jaxcpd.tkd_cpd`.

    Args:
      kernel: HWIO ``(D, D, S, T)`` conv kernel (e.g. from :func:`read_kernel`).
      ranks: positive int or sequence of them; studied in ascending order.
      method: ``"cpd-epc"`` or ``"tkd-cpd-epc"``.
      tucker_ranks: ``(R1, R2)``, required for ``"tkd-cpd-epc"`` only.
      key: ``jax.random`` key (``PRNGKey(0)`` if omitted); rank R uses
        :func:`rank_key` ``(key, R)``.
      als_kwargs, epc_kwargs: keyword arguments of :func:`jaxcpd.cp_als` and
        :func:`jaxcpd.epc` (e.g. ``max_iter``, ``tol``).
      progress: print one line per rank to stderr.
      name: layer name, for titles.

    Returns:
      :class:`LayerStudy`.

    Raises:
      ValueError: on a kernel that is not a finite 4-D array, bad ranks, an unknown
        method, or missing/unexpected ``tucker_ranks``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ranks = _check_ranks(ranks)
    x = kernel_to_tensor(kernel)
    shape = tuple(int(s) for s in jnp.shape(kernel))
    key = check_key(key)
    if not bool(jnp.any(x != 0)):
        raise ValueError("kernel is all zeros; there is nothing to decompose")
    if method == "cpd-epc":
        if tucker_ranks is not None:
            raise ValueError("tucker_ranks only applies to method='tkd-cpd-epc'")
        target, lift, tucker_err = x, (lambda f: f), None
    else:
        if tucker_ranks is None:
            raise ValueError("method='tkd-cpd-epc' needs tucker_ranks=(R1, R2)")
        if not isinstance(tucker_ranks, tuple | list) or len(tucker_ranks) != 2:
            raise ValueError(f"tucker_ranks must be a pair (R1, R2), got {tucker_ranks!r}")
        tk = tucker2(x, tuple(tucker_ranks))
        tucker_ranks = tuple(int(r) for r in tucker_ranks)
        target, tucker_err = tk.core, float(tk.rel_error)
        u, v = tk.U, tk.V

        def lift(f):
            return (f[0], u @ f[1], v @ f[2])

    records = []
    for rank in ranks:
        start = time.perf_counter()
        res = cpd_epc(target, rank, key=rank_key(key, rank), als_kwargs=als_kwargs, epc_kwargs=epc_kwargs)
        err_c, sq_c, sens_c, int_c = _stats(x, lift(res.cpd.factors))
        err_e, sq_e, sens_e, int_e = _stats(x, lift(res.epc.factors))
        rec = RankRecord(
            rank=rank,
            rel_error_cpd=err_c,
            rel_error_epc=err_e,
            intensity_sq_cpd=sq_c,
            intensity_sq_epc=sq_e,
            sensitivity_cpd=sens_c,
            sensitivity_epc=sens_e,
            intensities_cpd=int_c,
            intensities_epc=int_e,
            als_iters=int(res.cpd.n_iter),
            epc_iters=int(res.epc.n_iter),
            seconds=time.perf_counter() - start,
        )
        records.append(rec)
        if progress:
            print(
                f"rank {rank}: error {err_c:.4f} -> {err_e:.4f}, eq.3 {sq_c:.4g} -> {sq_e:.4g}, "
                f"eq.5 {sens_c:.4g} -> {sens_e:.4g} ({rec.seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return LayerStudy(name, shape, method, tucker_ranks, tucker_err, tuple(records))


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _intensity_axes(ax, rec: RankRecord, title: str):
    terms = np.arange(1, rec.rank + 1)
    ax.semilogy(terms, rec.intensities_cpd, "-", label="CPD")
    ax.semilogy(terms, rec.intensities_epc, "--", label="CPD-EPC")
    ax.set(xlabel="rank-1 term (sorted)", ylabel="intensity $\\|a_r \\circ b_r \\circ c_r\\|_F$", title=title)
    ax.legend()


def _vs_rank_axes(ax, records, which: str):
    ranks = [r.rank for r in records]
    label = {"intensity_sq": "sum sq. intensity (eq. 3)", "sensitivity": "sensitivity (eq. 5)"}[which]
    style = "o" if which == "intensity_sq" else "s"
    ax.semilogy(ranks, [getattr(r, f"{which}_cpd") for r in records], f"{style}-", label=f"{label}, CPD")
    ax.semilogy(ranks, [getattr(r, f"{which}_epc") for r in records], f"{style}--", label=f"{label}, CPD-EPC")
    ax.set(xlabel="CP rank")
    ax.legend(fontsize=8)


def plot_intensities(study: LayerStudy, path) -> Path:
    """Intensity of each sorted rank-1 term, CPD vs CPD-EPC, at the largest and smallest rank.

    The paper's Fig. 2 left and Fig. 4 right (log scale).
    """
    plt = _pyplot()
    shown = [study.records[-1]] if len(study.records) == 1 else [study.records[-1], study.records[0]]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4), squeeze=False)
    for ax, rec in zip(axes[0], shown, strict=True):
        _intensity_axes(ax, rec, f"rank {rec.rank}")
    fig.suptitle(study.title())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_vs_rank(study: LayerStudy, path) -> Path:
    """Sum of squared intensities (eq. 3) and sensitivity (eq. 5) vs rank, CPD vs CPD-EPC (Fig. 2 right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _vs_rank_axes(left, study.records, "intensity_sq")
    left.set(title="eq. 3: sum of squared intensities")
    _vs_rank_axes(right, study.records, "sensitivity")
    right.set(title="eq. 5: sensitivity")
    fig.suptitle(study.title())
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_fig2(study: LayerStudy, path, *, title: str | None = None) -> Path:
    """The paper's Fig. 2 in one figure: intensities at the largest rank, eq. 3 and eq. 5 vs rank."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    _intensity_axes(left, study.records[-1], f"{study.name or 'kernel'}, rank {study.records[-1].rank}")
    _vs_rank_axes(right, study.records, "intensity_sq")
    _vs_rank_axes(right, study.records, "sensitivity")
    right.set(title="eq. 3 and eq. 5 vs rank")
    fig.suptitle(title or study.title())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
