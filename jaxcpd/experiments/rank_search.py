"""Accuracy-driven rank search, one layer at a time (paper section 3, "Rank Search Procedure").

Phan et al. choose each layer's CP rank by "a heuristic binary search to find the
smallest rank such that drop after single layer fine-tuning does not exceed a
predefined accuracy drop threshold EPS" (section 3). :func:`rank_search` runs that
search for any ``probe(layer, rank)`` function; :func:`single_layer_probe` builds the
paper's probe (compress one layer, fine-tune only that layer, evaluate);
:func:`rank_bounds` gives the search interval (ranks that do not add weights);
:func:`plot_rank_search` draws the probes as in the paper's Fig. 6 (accuracy vs the
layer's FLOPs, one series per method).

**The search and its probe count.** With ``n = hi - lo + 1`` candidate ranks and
the accuracy assumed non-decreasing in the rank, the interval ``[a, b]`` (start
``[lo, hi]``) is bisected at the lower midpoint ``m = (a + b) // 2``: if rank ``m``
passes (``baseline - accuracy <= eps``) the search keeps ``[a, m]``, else
``[m + 1, b]``, until one rank is left. That takes ``floor(log2 n)`` or
``ceil(log2 n)`` probes (exactly ``log2 n`` when ``n`` is a power of two). If the
remaining rank is ``hi`` and no probe passed (so ``hi`` was never probed), ``hi`` is
probed once more to decide whether it meets ``eps``; if it does not, the layer gets
``hi`` and ``met[layer]`` is ``False``. So for ``n = 2**k`` a layer costs ``k``
probes, plus one when the answer is ``hi`` or nothing passes.

**Resuming.** With ``cache=path`` every probe is written to a JSON file as soon as it
returns (temporary file + ``os.replace``, so the file is never half-written). A rerun
with the same file reuses the cached ``(layer, rank)`` probes instead of calling
``probe`` again; an interrupted search therefore resumes where it stopped, and a
finished one replays without any call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..compression.plan import CP_METHODS, TKD_METHODS, LayerPlan
from ..compression.surgery import check_target, compress, planned_params
from ..models import get_submodule
from ..train import TrainConfig, evaluate, finetune

CACHE_VERSION = 1
PLAN_METHODS = (*CP_METHODS, *TKD_METHODS, "svd")
# Fig. 6 markers: standard CPD cross, CPD-EPC square, TKD-CPD-EPC circle.
MARKERS = {"cpd": "x", "cpd-epc": "s", "tkd-cpd-epc": "o", "tkd-cpd": "D", "svd": "^"}


@dataclasses.dataclass(frozen=True)
class Probe:
    """One evaluated ``(layer, rank)``: its accuracy and the probe's extra numbers.

    Attributes:
      layer: layer name (``"layer4.1.conv1"``).
      rank: the rank probed.
      accuracy: accuracy after single-layer fine-tuning (a fraction, like ``top1``).
      extra: further numbers the probe returned (``flops``, ``params``, ``rel_error``,
        ``seconds``, ...).
    """

    layer: str
    rank: int
    accuracy: float
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "rank": self.rank, "accuracy": self.accuracy, "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Probe:
        try:
            layer, rank, accuracy = str(data["layer"]), int(data["rank"]), float(data["accuracy"])
            return cls(layer, rank, accuracy, dict(data.get("extra", {})))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"a probe record needs layer, rank and accuracy, got {data!r}") from err


@dataclasses.dataclass
class RankSearchResult:
    """Outcome of :func:`rank_search`.

    Attributes:
      ranks: the rank found for each layer (smallest passing rank, or ``hi`` if none passed).
      probes: the probes of the search path, in search order (cached ones included).
      baseline: accuracy of the uncompressed model.
      eps: the accepted accuracy drop EPS (section 3).
      met: whether each layer's rank meets ``baseline - accuracy <= eps``.
      tag: the setting the search was run with (e.g. method and fine-tuning steps).
      bounds: the ``(lo, hi)`` interval searched for each layer.
    """

    ranks: dict[str, int]
    probes: list[Probe]
    baseline: float
    eps: float
    met: dict[str, bool]
    tag: str | None = None
    bounds: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)

    def layer_probes(self, layer: str) -> list[Probe]:
        """The probes of one layer, in search order."""
        return [p for p in self.probes if p.layer == layer]

    def to_plan(self, method: str, *, tucker_ranks: Mapping | None = None) -> dict[str, LayerPlan]:
        """The found ranks as a compression plan for :func:`jaxcpd.compress`.

        Args:
          method: ``"cpd"``, ``"cpd-epc"``, ``"svd"`` (plan entry ``rank=r``) or
            ``"tkd-cpd"``, ``"tkd-cpd-epc"`` (CP rank ``r`` of the Tucker-2 core).
          tucker_ranks: for the TKD-CPD methods, each layer's Tucker-2 ranks
            ``(R1, R2)`` (or a relative error bound in (0, 1) choosing them).

        Returns:
          ``dict[str, LayerPlan]`` in the search's layer order.
        """
        if method not in PLAN_METHODS:
            raise ValueError(f"method must be one of {PLAN_METHODS}, got {method!r}")
        if method not in TKD_METHODS:
            return {name: LayerPlan(method, rank=rank) for name, rank in self.ranks.items()}
        if tucker_ranks is None:
            raise ValueError(f"tucker_ranks: method {method!r} needs each layer's Tucker-2 ranks (R1, R2)")
        return {name: _tkd_entry(method, rank, tucker_ranks, name) for name, rank in self.ranks.items()}

    def to_dict(self) -> dict:
        """Plain-data (JSON) form."""
        return {
            "baseline": self.baseline,
            "eps": self.eps,
            "tag": self.tag,
            "ranks": dict(self.ranks),
            "met": dict(self.met),
            "bounds": {name: list(b) for name, b in self.bounds.items()},
            "probes": [p.to_dict() for p in self.probes],
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> RankSearchResult:
        """Inverse of :meth:`to_dict`."""
        missing = {"baseline", "eps", "ranks", "met", "probes"} - set(data)
        if missing:
            raise ValueError(f"a rank search result needs the keys {sorted(missing)}")
        return cls(
            ranks={str(k): int(v) for k, v in data["ranks"].items()},
            probes=[Probe.from_dict(p) for p in data["probes"]],
            baseline=float(data["baseline"]),
            eps=float(data["eps"]),
            met={str(k): bool(v) for k, v in data["met"].items()},
            tag=data.get("tag"),
            bounds={str(k): (int(v[0]), int(v[1])) for k, v in data.get("bounds", {}).items()},
        )

    def table(self) -> str:
        """Markdown table: one row per layer with its interval, rank, accuracy, drop and probes."""
        title = f"Rank search: baseline {self.baseline:.4f}, EPS {self.eps:g}"
        lines = [
            title + (f", {self.tag}" if self.tag else ""),
            "",
            "| layer | lo..hi | rank | accuracy | drop | meets EPS | probes | FLOPs |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, rank in self.ranks.items():
            found = [p for p in self.layer_probes(name) if p.rank == rank]
            acc = found[-1].accuracy if found else float("nan")
            flops = found[-1].extra.get("flops") if found else None
            lo_hi = "{}..{}".format(*self.bounds[name]) if name in self.bounds else ""
            lines.append(
                f"| {name} | {lo_hi} | {rank} | {acc:.4f} | {self.baseline - acc:+.4f} | "
                f"{'yes' if self.met[name] else 'no'} | {len(self.layer_probes(name))} | "
                f"{'' if flops is None else f'{flops:,}'} |"
            )
        return "\n".join(lines)


def _tkd_entry(method: str, rank: int, tucker_ranks: Mapping, name: str) -> LayerPlan:
    if name not in tucker_ranks:
        raise ValueError(f"tucker_ranks: no Tucker-2 ranks for layer {name!r}")
    value = tucker_ranks[name]
    if isinstance(value, float):
        return LayerPlan(method, rank=rank, error_bound=value)
    return LayerPlan(method, rank=rank, ranks=tuple(value))


# ----------------------------------------------------------------------------------------------
# validation and the probe cache


def _check_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return int(value)


def _check_layers(layers) -> dict[str, tuple[int, int]]:
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(f"layers must be a non-empty mapping of layer name -> (lo, hi), got {layers!r}")
    out = {}
    for name, bounds in layers.items():
        if not isinstance(name, str):
            raise ValueError(f"layers: names must be str, got {name!r}")
        try:
            lo, hi = bounds
        except (TypeError, ValueError) as err:
            raise ValueError(f"layers[{name!r}] must be a pair (lo, hi), got {bounds!r}") from err
        lo, hi = _check_int(lo, f"layers[{name!r}] lo"), _check_int(hi, f"layers[{name!r}] hi")
        if not 1 <= lo <= hi:
            raise ValueError(f"layers[{name!r}] must satisfy 1 <= lo <= hi, got ({lo}, {hi})")
        out[name] = (lo, hi)
    return out


def _check_number(value, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a finite number, got {value!r}") from err
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def _as_probe(layer: str, rank: int, value) -> Probe:
    """Checks a probe's return value (a number, or a mapping with ``accuracy``)."""
    where = f"probe({layer!r}, {rank})"
    extra = {}
    if isinstance(value, Mapping):
        if "accuracy" not in value:
            raise ValueError(f"{where} returned a mapping without 'accuracy': keys {sorted(value)}")
        for key, item in value.items():
            if key == "accuracy":
                continue
            if item is None or isinstance(item, str | bool):
                extra[str(key)] = item
            elif isinstance(item, int | np.integer):
                extra[str(key)] = int(item)
            else:
                try:
                    extra[str(key)] = float(item)
                except (TypeError, ValueError) as err:
                    raise ValueError(f"{where}: extra value {key!r} must be a number, got {item!r}") from err
        value = value["accuracy"]
    try:
        accuracy = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} must return a float or a mapping with 'accuracy', got {value!r}") from err
    if math.isnan(accuracy):
        raise ValueError(f"{where}: accuracy is NaN for layer {layer!r} at rank {rank}")
    if not math.isfinite(accuracy):
        raise ValueError(f"{where}: accuracy is {accuracy} for layer {layer!r} at rank {rank}")
    return Probe(layer, rank, accuracy, extra)


class _Cache:
    """Probes keyed by ``(layer, rank)``, mirrored to a JSON file after every addition."""

    def __init__(self, path, header: dict):
        self.path = None if path is None else Path(path)
        self.header = header
        self.probes: dict[tuple[str, int], Probe] = {}
        if self.path is None:
            return
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cache: {self.path} is not a readable rank-search cache: {err}") from err
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            raise ValueError(f"cache: {self.path} is not a version-{CACHE_VERSION} rank-search cache")
        for key, value in self.header.items():
            if data.get(key) != value:
                raise ValueError(
                    f"cache: {self.path} was written with {key}={data.get(key)!r}, this search has "
                    f"{key}={value!r}; its probes belong to another setting. Use another cache file "
                    "(e.g. another run directory) or delete this one."
                )
        for record in data.get("probes", []):
            probe = Probe.from_dict(record)
            self.probes[(probe.layer, probe.rank)] = probe

    def get(self, layer: str, rank: int) -> Probe | None:
        return self.probes.get((layer, rank))

    def add(self, probe: Probe) -> None:
        self.probes[(probe.layer, probe.rank)] = probe
        if self.path is not None:
            self._write()

    def _write(self) -> None:
        probes = [p.to_dict() for p in self.probes.values()]
        data = {"version": CACHE_VERSION, **self.header, "probes": probes}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


# ----------------------------------------------------------------------------------------------
# the search


def _search_layer(layer: str, lo: int, hi: int, evaluate: Callable[[str, int], Probe], passes):
    """Bisection of section 3 on ``[lo, hi]`` (see the module docstring for the probe count)."""
    a, b, b_probed, path = lo, hi, False, []
    while a < b:
        mid = (a + b) // 2
        probe = evaluate(layer, mid)
        path.append(probe)
        if passes(probe):
            b, b_probed = mid, True
        else:
            a = mid + 1
    if b_probed:
        return a, True, path
    probe = evaluate(layer, hi)  # every probe failed (or lo == hi): does hi itself meet EPS?
    path.append(probe)
    return hi, passes(probe), path


def rank_search(
    probe: Callable[[str, int], Any],
    layers: Mapping[str, tuple[int, int]],
    *,
    baseline: float,
    eps: float,
    cache=None,
    tag: str | None = None,
    progress: bool = False,
) -> RankSearchResult:
    """Per layer, the smallest rank whose accuracy drop stays within ``eps`` (section 3).

    "We apply a heuristic binary search to find the smallest rank such that drop
    after single layer fine-tuning does not exceed a predefined accuracy drop
    threshold EPS" (Phan et al., section 3). The accuracy is assumed non-decreasing
    in the rank. Each layer's interval is bisected at the lower midpoint:
    ``floor(log2 n)`` to ``ceil(log2 n)`` probes for ``n = hi - lo + 1`` ranks
    (exactly ``log2 n`` when ``n`` is a power of two), plus one probe of ``hi`` when
    no bisection probe passed. If ``hi`` fails too, the layer gets ``hi`` and
    ``met[layer]`` is ``False``.

    Args:
      probe: ``probe(layer, rank)`` returning the accuracy after compressing ``layer``
        at ``rank`` (and fine-tuning it), as a float or a mapping with ``"accuracy"``
        and extra numbers (``"flops"``, ``"params"``, ...) kept with the probe; e.g.
        :func:`single_layer_probe`.
      layers: ``{layer name: (lo, hi)}``, inclusive integer rank bounds with
        ``1 <= lo <= hi`` (e.g. from :func:`rank_bounds`); searched in this order.
      baseline: accuracy of the uncompressed model.
      eps: accepted accuracy drop EPS >= 0: a rank passes when ``baseline - accuracy <= eps``.
      cache: path of a JSON file keeping every probe as soon as it is done; a rerun with
        the same file reuses its probes. A file written with another ``baseline``,
        ``eps`` or ``tag`` is refused.
      tag: identifies the probe's setting (e.g. ``"cpd-epc, 200 steps"``); stored in
        the cache and checked on reuse.
      progress: show a progress bar over the layers.

    Returns:
      A :class:`RankSearchResult`.

    Raises:
      ValueError: bad arguments, a mismatched or unreadable cache, or a probe returning
        NaN or something that is not an accuracy.
    """
    if not callable(probe):
        raise ValueError(f"probe must be callable as probe(layer, rank), got {type(probe).__name__}")
    bounds = _check_layers(layers)
    baseline = _check_number(baseline, "baseline")
    eps = _check_number(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if tag is not None and not isinstance(tag, str):
        raise ValueError(f"tag must be a str or None, got {tag!r}")
    store = _Cache(cache, {"baseline": baseline, "eps": eps, "tag": tag})

    def evaluate(layer: str, rank: int) -> Probe:
        found = store.get(layer, rank)
        if found is None:
            found = _as_probe(layer, rank, probe(layer, rank))
            store.add(found)
        return found

    def passes(p: Probe) -> bool:
        return baseline - p.accuracy <= eps

    ranks, met, probes = {}, {}, []
    bar = tqdm(bounds.items(), desc="rank search", unit="layer", disable=not progress)
    for name, (lo, hi) in bar:
        bar.set_postfix(layer=name)
        ranks[name], met[name], path = _search_layer(name, lo, hi, evaluate, passes)
        probes += path
    bar.close()
    return RankSearchResult(ranks, probes, baseline, eps, met, tag, bounds)


# ----------------------------------------------------------------------------------------------
# the paper's probe, and the search interval


def rank_bounds(
    model, layers: Iterable[str], method: str, *, tucker_ranks: Mapping | None = None
) -> dict[str, tuple[int, int]]:
    """``{layer: (1, hi)}`` with ``hi`` the largest rank whose block has no more weights than the layer.

    The block weights are those :func:`jaxcpd.compression.surgery.planned_params`
    counts: ``R (D² + S + T)`` for the CP block, ``R (S + T)`` for SVD, and the
    TKD-CPD block with the given Tucker-2 ranks (its 1x1 convs merged where that is
    cheaper, section 3).

    Args:
      model: an NNX model.
      layers: layer names (torchvision style).
      method: ``"cpd"``, ``"cpd-epc"``, ``"tkd-cpd"``, ``"tkd-cpd-epc"`` or ``"svd"``.
      tucker_ranks: for the TKD-CPD methods, ``{layer: (R1, R2)}``.

    Returns:
      ``dict[str, (1, hi)]``, ready for :func:`rank_search`.

    Raises:
      ValueError: unknown method or layer, a layer the method does not apply to, or a
        layer where even rank 1 adds weights.
    """
    if method not in PLAN_METHODS:
        raise ValueError(f"method must be one of {PLAN_METHODS}, got {method!r}")
    if isinstance(layers, str):
        layers = [layers]
    out = {}
    for name in layers:
        module = get_submodule(model, name)
        if method in TKD_METHODS:
            if tucker_ranks is None or name not in tucker_ranks:
                raise ValueError(
                    f"tucker_ranks: method {method!r} needs the Tucker-2 ranks of layer {name!r}"
                )
            pair = tucker_ranks[name]
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise ValueError(
                    f"tucker_ranks[{name!r}] must be a pair (R1, R2) to bound the rank, got {pair!r}"
                )
            pair = tuple(pair)

            def entry(r, pair=pair):
                return LayerPlan(method, rank=r, ranks=pair)
        else:

            def entry(r):
                return LayerPlan(method, rank=r)

        check_target(name, module, entry(1))
        shape = tuple(module.kernel.shape)
        budget = math.prod(shape)
        if planned_params(entry(1), shape) > budget:
            raise ValueError(f"layer {name!r}: even rank 1 of {method!r} has more weights than its {budget}")
        lo, hi = 1, budget  # planned_params is increasing in the rank: bisect for the last fit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if planned_params(entry(mid), shape) <= budget else (lo, mid - 1)
        out[name] = (1, lo)
    return out


def single_layer_probe(
    model,
    train_data,
    eval_data,
    *,
    method: str,
    steps: int,
    config=None,
    key=None,
    tucker_ranks: Mapping | None = None,
    compress_kwargs: Mapping | None = None,
) -> Callable[[str, int], dict]:
    """The paper's probe: compress one layer, fine-tune only that layer, evaluate (section 3).

    For ``(layer, rank)``: ``jaxcpd.compress(model, {layer: LayerPlan(method, rank=rank)})``
    (a fresh copy each time; ``model`` is never changed), ``steps`` steps of
    :func:`jaxcpd.train.finetune` with only ``layer``'s parameters trainable (none when
    ``steps == 0``), then top-1 accuracy by :func:`jaxcpd.train.evaluate`.

    Args:
      model: the uncompressed NNX model.
      train_data: training batches (``jaxcpd.train.TrainData``, e.g. ``jaxcpd.train.load``).
      eval_data: evaluation batches.
      method: ``"cpd"``, ``"cpd-epc"``, ``"tkd-cpd"``, ``"tkd-cpd-epc"`` or ``"svd"``.
      steps: fine-tuning steps per probe (>= 0).
      config: a :class:`jaxcpd.train.TrainConfig` for the optimiser (default: the paper's
        recipe, momentum SGD with learning rate 1e-3); its ``steps``, ``trainable``,
        ``progress``, ``run_dir`` and ``resume`` are replaced (probes keep nothing on disk).
      key: ``jax.random`` key of the decompositions (default ``PRNGKey(0)``).
      tucker_ranks: for the TKD-CPD methods, ``{layer: (R1, R2)}`` (or an error bound).
      compress_kwargs: further options of :func:`jaxcpd.compress` (``als_kwargs``,
        ``epc_kwargs``, ``input_shape``, ``on_growth``). FLOPs are counted for one image
        of ``eval_data.info.image_shape`` when ``eval_data`` has it and no
        ``input_shape`` is given.

    Returns:
      ``probe(layer, rank) -> {"accuracy", "accuracy_before_finetune", "flops",
      "flops_before", "params", "params_before", "rel_error", "seconds"}`` with the
      layer's multiply-adds and weights after (and before) compression from the
      :class:`jaxcpd.CompressionReport`, and the probe's wall time.
    """
    if method not in PLAN_METHODS:
        raise ValueError(f"method must be one of {PLAN_METHODS}, got {method!r}")
    steps = _check_int(steps, "steps")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if method in TKD_METHODS and tucker_ranks is None:
        raise ValueError(f"tucker_ranks: method {method!r} needs {{layer: (R1, R2)}}")
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a jaxcpd.train.TrainConfig, got {type(config).__name__}")
    compress_kwargs = dict(compress_kwargs or {})
    info = getattr(eval_data, "info", None)  # a jaxcpd.train.Batches knows its image shape
    if "input_shape" not in compress_kwargs and info is not None:
        compress_kwargs["input_shape"] = (1, *info.image_shape)

    def probe(layer: str, rank: int) -> dict:
        start = time.perf_counter()
        if method in TKD_METHODS:
            entry = _tkd_entry(method, rank, tucker_ranks, layer)
        else:
            entry = LayerPlan(method, rank=rank)
        compressed, report = compress(model, {layer: entry}, key=key, progress=False, **compress_kwargs)
        row = report.layers[0]
        before = evaluate(compressed, eval_data)["top1"]
        after = before
        if steps:
            run = dataclasses.replace(
                config, steps=steps, trainable=(layer,), progress=False, run_dir=None, resume=False
            )
            compressed, _ = finetune(compressed, train_data, None, run)
            after = evaluate(compressed, eval_data)["top1"]
        return {
            "accuracy": float(after),
            "accuracy_before_finetune": float(before),
            "flops": int(row.flops_after),
            "flops_before": int(row.flops_before),
            "params": int(row.params_after),
            "params_before": int(row.params_before),
            "rel_error": float(row.rel_error),
            "seconds": time.perf_counter() - start,
        }

    return probe


# ----------------------------------------------------------------------------------------------
# Fig. 6


def plot_rank_search(results: Mapping[str, RankSearchResult], path, *, ncols: int = 4):
    """Fig. 6-style scatter: per layer, accuracy vs the layer's FLOPs of every probe, per method.

    One panel per layer (in a grid of ``ncols`` columns); in each, one series per
    method (the keys of ``results``; markers as Fig. 6: CPD cross, CPD-EPC square,
    TKD-CPD-EPC circle) with the probes joined by dashed lines in FLOP order, the found
    rank circled, and a horizontal line at ``baseline - eps``. The x axis is the
    probes' ``"flops"`` (the rank where a probe has none).

    Args:
      results: ``{method: RankSearchResult}``.
      path: output PNG file.
      ncols: panels per row.

    Returns:
      The ``matplotlib.figure.Figure`` written to ``path`` (not registered with pyplot,
      so nothing needs closing); one axes per layer.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping of method name -> RankSearchResult")
    for method, result in results.items():
        if not isinstance(result, RankSearchResult):
            raise ValueError(f"results[{method!r}] must be a RankSearchResult, got {type(result).__name__}")
    ncols = _check_int(ncols, "ncols")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    layers = list(dict.fromkeys(name for r in results.values() for name in r.ranks))
    ncols = min(ncols, len(layers))
    nrows = -(-len(layers) // ncols)
    fig = Figure(figsize=(4 * ncols, 3.2 * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, layer in zip(axes.flat, layers, strict=False):
        by_method = {m: r.layer_probes(layer) for m, r in results.items() if layer in r.ranks}
        use_flops = all("flops" in p.extra for ps in by_method.values() for p in ps)
        for i, (method, probes) in enumerate(by_method.items()):
            color = colors[i % len(colors)]
            points = sorted({(p.extra["flops"] if use_flops else p.rank, p.accuracy, p.rank) for p in probes})
            xs, ys = [x for x, _, _ in points], [y for _, y, _ in points]
            ax.plot(xs, ys, "--", color=color, linewidth=0.8)
            ax.scatter(xs, ys, marker=MARKERS.get(method, "o"), color=color, label=method, zorder=3)
            chosen = [(x, y) for x, y, r in points if r == results[method].ranks[layer]]
            if chosen:
                ax.scatter(*zip(*chosen, strict=True), s=160, facecolors="none", edgecolors=color, zorder=4)
        for level in sorted({r.baseline - r.eps for r in results.values()}):
            ax.axhline(level, color="gray", linestyle=":", linewidth=1)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("layer FLOPs (multiply-adds)" if use_flops else "rank")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7)
    for ax in axes.flat[len(layers) :]:
        fig.delaxes(ax)
    fig.suptitle("Single-layer compression: accuracy vs FLOPs (dotted: baseline - EPS)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return fig
