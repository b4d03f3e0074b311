"""Rank search (section 3): known thresholds of synthetic accuracy curves, probe counts, resuming, plans."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from rank_search_testing import BASELINE, EPS, STEP, ConvNet, CountingProbe, step_curve

import jaxcpd
from jaxcpd import LayerPlan
from jaxcpd.experiments import (
    Probe,
    RankSearchResult,
    plot_rank_search,
    rank_bounds,
    rank_search,
    single_layer_probe,
)
from jaxcpd.nn import count_flops
from jaxcpd.train import TrainConfig, evaluate, finetune, load

# (lo, hi, threshold) -> (rank found, meets EPS, ranks probed in order), worked out by hand
# from the rule: bisect [a, b] at (a + b) // 2, keep [a, m] on a pass and [m + 1, b] on a
# fail, and probe hi once more if no probe passed.
KNOWN = [
    ((1, 8, 1), (1, True, [4, 2, 1])),  # threshold at lo
    ((1, 8, 3), (3, True, [4, 2, 3])),
    ((1, 8, 7), (7, True, [4, 6, 7])),
    ((1, 8, 8), (8, True, [4, 6, 7, 8])),  # threshold at hi: the extra check of hi
    ((1, 8, 9), (8, False, [4, 6, 7, 8])),  # threshold above hi: hi, flagged
    ((1, 8, 50), (8, False, [4, 6, 7, 8])),
    ((5, 20, 5), (5, True, [12, 8, 6, 5])),  # n = 16: 4 probes
    ((5, 20, 13), (13, True, [12, 16, 14, 13])),
    ((5, 20, 21), (20, False, [12, 16, 18, 19, 20])),
    ((1, 10, 3), (3, True, [5, 3, 2])),  # n = 10: 3 or 4 probes
    ((1, 10, 1), (1, True, [5, 3, 2, 1])),
    ((1, 10, 10), (10, True, [5, 8, 9, 10])),
    ((3, 3, 2), (3, True, [3])),  # lo == hi: the one check of hi
    ((3, 3, 4), (3, False, [3])),
]


@pytest.mark.parametrize(("bounds", "expected"), KNOWN)
def test_known_threshold_is_found_with_the_expected_probes(bounds, expected):
    lo, hi, threshold = bounds
    rank, met, probed = expected
    probe = CountingProbe({"conv": step_curve(threshold)})
    result = rank_search(probe, {"conv": (lo, hi)}, baseline=BASELINE, eps=EPS)
    assert result.ranks == {"conv": rank} and result.met == {"conv": met}
    assert probe.calls == [("conv", r) for r in probed]
    assert [(p.layer, p.rank) for p in result.probes] == probe.calls
    assert [p.accuracy for p in result.probes] == [step_curve(threshold)(r) for r in probed]


@pytest.mark.parametrize("lo", [1, 7])
@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_power_of_two_intervals_take_log2_probes_plus_the_check_of_hi(lo, k):
    n = 2**k
    hi = lo + n - 1
    for threshold in range(lo - 2, hi + 3):
        probe = CountingProbe({"conv": step_curve(threshold)})
        result = rank_search(probe, {"conv": (lo, hi)}, baseline=BASELINE, eps=EPS)
        assert result.ranks["conv"] == min(max(threshold, lo), hi)
        assert result.met["conv"] == (threshold <= hi)
        assert len(probe.calls) == k + (max(threshold, lo) >= hi)  # + 1 when the answer is hi


@settings(max_examples=60, deadline=None)
@given(
    lo=st.integers(1, 40),
    n=st.integers(1, 300),
    jumps=st.lists(st.floats(0.0, 0.05), min_size=301, max_size=301),
    eps=st.floats(0.0, 0.1),
)
def test_random_monotone_curves(lo, n, jumps, eps):
    hi = lo + n - 1
    levels = np.cumsum(jumps)  # non-decreasing accuracy over the ranks lo..hi
    baseline = float(levels[n - 1]) + 0.02

    def accuracy(rank):
        return float(levels[rank - lo])

    probe = CountingProbe({"a": accuracy, "b": lambda r: accuracy(r) - 1.0})  # b never passes
    result = rank_search(probe, {"a": (lo, hi), "b": (lo, hi)}, baseline=baseline, eps=eps)
    passing = [r for r in range(lo, hi + 1) if baseline - accuracy(r) <= eps]
    assert result.ranks["a"] == (passing[0] if passing else hi)
    assert result.met["a"] == bool(passing)
    assert result.ranks["b"] == hi and not result.met["b"]
    calls_a = [r for layer, r in probe.calls if layer == "a"]
    assert len(set(calls_a)) == len(calls_a)  # no rank probed twice
    extra = int(not passing or passing[0] == hi)  # the check of hi: no bisection probe passed
    assert math.floor(math.log2(n)) + extra <= len(calls_a) <= math.ceil(math.log2(n)) + extra
    if n & (n - 1) == 0:
        assert len(calls_a) == int(math.log2(n)) + extra
    calls_b = [r for layer, r in probe.calls if layer == "b"]
    assert len(calls_b) == math.floor(math.log2(n)) + 1 and calls_b[-1] == hi


def test_interrupted_search_resumes_from_its_cache(tmp_path):
    curves = {
        "layer1.0.conv1": step_curve(5),
        "layer1.0.conv2": step_curve(11),
        "layer2.0.conv1": step_curve(40),
    }
    layers = {"layer1.0.conv1": (1, 16), "layer1.0.conv2": (1, 16), "layer2.0.conv1": (1, 32)}
    full = CountingProbe(curves, extra=True)
    expected = rank_search(full, layers, baseline=BASELINE, eps=EPS)
    assert expected.ranks == {"layer1.0.conv1": 5, "layer1.0.conv2": 11, "layer2.0.conv1": 32}
    assert len(full.calls) == 4 + 4 + 6

    cache = tmp_path / "run" / "rank_search.json"
    done = 0
    for stop_after in (6, 3):  # interrupted twice: in the second layer, then in the third
        interrupted = CountingProbe(curves, stop_after=stop_after, extra=True)
        with pytest.raises(KeyboardInterrupt):
            rank_search(interrupted, layers, baseline=BASELINE, eps=EPS, cache=cache, tag="cpd-epc, 10 steps")
        assert interrupted.calls == full.calls[done : done + stop_after]
        done += stop_after
        saved = json.loads(cache.read_text())  # complete JSON, every finished probe in it
        assert len(saved["probes"]) == done
        assert not list(cache.parent.glob("*.tmp"))
    rerun = CountingProbe(curves, extra=True)
    result = rank_search(rerun, layers, baseline=BASELINE, eps=EPS, cache=cache, tag="cpd-epc, 10 steps")
    assert rerun.calls == full.calls[9:]  # only the probes not done yet
    assert result.ranks == expected.ranks and result.met == expected.met
    assert result.probes == expected.probes  # cached probes come back with their extras
    replay = CountingProbe(curves, extra=True)
    again = rank_search(replay, layers, baseline=BASELINE, eps=EPS, cache=cache, tag="cpd-epc, 10 steps")
    assert replay.calls == [] and again.ranks == expected.ranks


def test_interruption_after_k_probes_makes_the_rerun_call_only_the_rest(tmp_path):
    curves = {"conv": step_curve(13)}
    full = CountingProbe(curves)
    rank_search(full, {"conv": (1, 64)}, baseline=BASELINE, eps=EPS)
    for k in range(len(full.calls)):  # interrupted during the (k + 1)-th probe
        cache = tmp_path / f"cache{k}.json"
        with pytest.raises(KeyboardInterrupt):
            rank_search(
                CountingProbe(curves, stop_after=k),
                {"conv": (1, 64)},
                baseline=BASELINE,
                eps=EPS,
                cache=cache,
            )
        rerun = CountingProbe(curves)
        result = rank_search(rerun, {"conv": (1, 64)}, baseline=BASELINE, eps=EPS, cache=cache)
        assert rerun.calls == full.calls[k:]
        assert result.ranks == {"conv": 13}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tag": "cpd, 10 steps"}, "tag"),
        ({"eps": 0.01}, "eps"),
        ({"baseline": 0.7}, "baseline"),
        ({"tag": None}, "tag"),
    ],
)
def test_a_cache_of_another_setting_is_refused(tmp_path, change, field):
    cache = tmp_path / "cache.json"
    setting = {"baseline": BASELINE, "eps": EPS, "tag": "cpd-epc, 10 steps"}
    rank_search(CountingProbe({"conv": step_curve(3)}), {"conv": (1, 8)}, cache=cache, **setting)
    before = cache.read_text()
    probe = CountingProbe({"conv": step_curve(3)})
    with pytest.raises(ValueError, match=f"^cache: .* was written with {field}=.*another setting"):
        rank_search(probe, {"conv": (1, 8)}, cache=cache, **{**setting, **change})
    assert probe.calls == [] and cache.read_text() == before


def test_an_unreadable_cache_is_refused(tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    with pytest.raises(ValueError, match="^cache: .* is not a readable rank-search cache"):
        rank_search(
            CountingProbe({"conv": step_curve(3)}), {"conv": (1, 8)}, baseline=0.7, eps=0.0, cache=cache
        )
    cache.write_text(json.dumps({"probes": []}))
    with pytest.raises(ValueError, match="^cache: .* is not a version-1 rank-search cache"):
        rank_search(
            CountingProbe({"conv": step_curve(3)}), {"conv": (1, 8)}, baseline=0.7, eps=0.0, cache=cache
        )


def _good(**change):
    args = {
        "probe": CountingProbe({"conv": step_curve(3)}),
        "layers": {"conv": (1, 8)},
        "baseline": 0.7,
        "eps": 0.01,
    }
    args.update(change)
    probe, layers = args.pop("probe"), args.pop("layers")
    return lambda: rank_search(probe, layers, **args)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"eps": -0.01}, r"^eps must be >= 0"),
        ({"eps": float("nan")}, r"^eps must be a finite number"),
        ({"baseline": "high"}, r"^baseline must be a finite number"),
        ({"probe": 0.5}, r"^probe must be callable"),
        ({"layers": {}}, r"^layers must be a non-empty mapping"),
        ({"layers": ["conv"]}, r"^layers must be a non-empty mapping"),
        ({"layers": {"conv": (0, 8)}}, r"^layers\['conv'\] must satisfy 1 <= lo <= hi, got \(0, 8\)"),
        ({"layers": {"conv": (9, 8)}}, r"^layers\['conv'\] must satisfy 1 <= lo <= hi, got \(9, 8\)"),
        ({"layers": {"conv": (1.0, 8)}}, r"^layers\['conv'\] lo must be an int"),
        ({"layers": {"conv": (1, True)}}, r"^layers\['conv'\] hi must be an int"),
        ({"layers": {"conv": 8}}, r"^layers\['conv'\] must be a pair \(lo, hi\)"),
        ({"tag": 3}, r"^tag must be a str or None"),
    ],
)
def test_bad_arguments_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        _good(**change)()


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (float("nan"), r"^probe\('conv', 4\): accuracy is NaN for layer 'conv' at rank 4"),
        ({"accuracy": np.float32("nan")}, r"accuracy is NaN for layer 'conv' at rank 4"),
        ({"top1": 0.5}, r"^probe\('conv', 4\) returned a mapping without 'accuracy'"),
        ("good", r"^probe\('conv', 4\) must return a float or a mapping"),
        ({"accuracy": 0.5, "flops": [1, 2]}, r"extra value 'flops' must be a number"),
    ],
)
def test_bad_probe_results_are_refused(returned, message):
    with pytest.raises(ValueError, match=message):
        rank_search(lambda layer, rank: returned, {"conv": (1, 8)}, baseline=0.7, eps=0.01)


def test_result_json_round_trip_table_and_plans():
    probe = CountingProbe({"conv1": step_curve(3), "conv2": step_curve(30)}, extra=True)
    result = rank_search(probe, {"conv1": (1, 8), "conv2": (2, 9)}, baseline=BASELINE, eps=EPS, tag="t")
    assert result.ranks == {"conv1": 3, "conv2": 9} and result.met == {"conv1": True, "conv2": False}
    assert result.bounds == {"conv1": (1, 8), "conv2": (2, 9)}
    assert result.probes[0] == Probe("conv1", 4, BASELINE, {"flops": 4000, "params": 40, "note": "synthetic"})
    back = RankSearchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result

    table = result.table().splitlines()
    assert table[0] == f"Rank search: baseline {BASELINE:.4f}, EPS {EPS:g}, t"
    assert table[4] == "| conv1 | 1..8 | 3 | 0.7500 | +0.0000 | yes | 3 | 3,000 |"
    drop = 21 * STEP
    assert table[5] == f"| conv2 | 2..9 | 9 | {BASELINE - drop:.4f} | {drop:+.4f} | no | 4 | 9,000 |"

    assert result.to_plan("cpd-epc") == {
        "conv1": LayerPlan("cpd-epc", rank=3),
        "conv2": LayerPlan("cpd-epc", rank=9),
    }
    assert result.to_plan("svd")["conv2"] == LayerPlan("svd", rank=9)
    tkd = result.to_plan("tkd-cpd-epc", tucker_ranks={"conv1": (4, 5), "conv2": 0.3})
    assert tkd == {
        "conv1": LayerPlan("tkd-cpd-epc", rank=3, ranks=(4, 5)),
        "conv2": LayerPlan("tkd-cpd-epc", rank=9, error_bound=0.3),
    }
    with pytest.raises(ValueError, match=r"^tucker_ranks: method 'tkd-cpd' needs"):
        result.to_plan("tkd-cpd")
    with pytest.raises(ValueError, match=r"^tucker_ranks: no Tucker-2 ranks for layer 'conv2'"):
        result.to_plan("tkd-cpd", tucker_ranks={"conv1": (4, 5)})
    with pytest.raises(ValueError, match=r"^method must be one of"):
        result.to_plan("tucker2")


@pytest.fixture(scope="module")
def convnet():
    return ConvNet(rngs=nnx.Rngs(0))


def test_rank_bounds_are_the_largest_ranks_without_more_weights(convnet):
    # conv2: 3x3, 8 -> 12, 864 weights. CP block R (9 + 8 + 12) <= 864  =>  R <= 29.
    # proj: 1x1, 16 -> 16, 256 weights. SVD R (16 + 16) <= 256  =>  R <= 8.
    assert rank_bounds(convnet, ["conv2", "conv3"], "cpd-epc") == {"conv2": (1, 29), "conv3": (1, 46)}
    assert rank_bounds(convnet, ["proj"], "svd") == {"proj": (1, 8)}
    # TKD-CPD with (R1, R2) = (4, 6) on conv2: for R >= 12 neither side merges and the block
    # has 8*4 + 4R + 9R + 6R + 6*12 = 104 + 19R weights, <= 864 up to R = 40.
    assert rank_bounds(convnet, ["conv2"], "tkd-cpd", tucker_ranks={"conv2": (4, 6)}) == {"conv2": (1, 40)}
    with pytest.raises(ValueError, match=r"1x1 conv: use method 'svd'"):
        rank_bounds(convnet, ["proj"], "cpd")
    with pytest.raises(ValueError, match=r"'svd' is for 1x1 convs"):
        rank_bounds(convnet, ["conv2"], "svd")
    with pytest.raises(ValueError, match=r"^tucker_ranks: method 'tkd-cpd-epc' needs the Tucker-2 ranks"):
        rank_bounds(convnet, ["conv2"], "tkd-cpd-epc")
    with pytest.raises(ValueError, match=r"^tucker_ranks\['conv2'\] must be a pair \(R1, R2\)"):
        rank_bounds(convnet, ["conv2"], "tkd-cpd-epc", tucker_ranks={"conv2": 0.3})
    with pytest.raises(ValueError, match=r"^method must be one of"):
        rank_bounds(convnet, ["conv2"], "tucker2")
    with pytest.raises(ValueError, match=r"even rank 1 of 'cpd' has more weights than its 9"):
        rank_bounds(ConvNet((1, 1, 1), rngs=nnx.Rngs(0)), ["conv2"], "cpd")
    with pytest.raises(ValueError, match="conv9"):
        rank_bounds(convnet, ["conv9"], "cpd")


@pytest.fixture(scope="module")
def mnist():
    return load("mnist-subset", "train", batch_size=32), load("mnist-subset", "test", batch_size=500)


FAST = {"als_kwargs": {"max_iter": 20}, "epc_kwargs": {"max_iter": 5}}


def _params(model):
    return {".".join(map(str, k)): np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_single_layer_probe_compresses_fine_tunes_and_evaluates_one_layer(convnet, mnist):
    train, test = mnist
    before = _params(convnet)
    key = jax.random.PRNGKey(3)
    config = TrainConfig(learning_rate=0.05, schedule="constant", seed=1)
    plan = {"conv2": LayerPlan("cpd", rank=4)}

    compressed, report = jaxcpd.compress(
        convnet, plan, key=key, progress=False, input_shape=(1, 28, 28, 1), **FAST
    )
    untuned = evaluate(compressed, test)["top1"]
    tuned_model, _ = finetune(
        compressed, train, None, dataclasses.replace(config, steps=2, trainable=("conv2",), progress=False)
    )
    tuned = evaluate(tuned_model, test)["top1"]

    probe = single_layer_probe(
        convnet, train, test, method="cpd", steps=2, config=config, key=key, compress_kwargs=FAST
    )
    out = probe("conv2", 4)
    assert set(out) == {
        "accuracy",
        "accuracy_before_finetune",
        "flops",
        "flops_before",
        "params",
        "params_before",
        "rel_error",
        "seconds",
    }
    assert out["accuracy_before_finetune"] == untuned and out["accuracy"] == tuned
    assert out["flops"] == count_flops(compressed, (1, 28, 28, 1), by_layer=True)["conv2"]
    # the CP block at 28x28 input: conv1 stride 2 -> 14x14 (SAME), conv2 stride 2 -> 7x7 output
    assert out["flops_before"] == 7 * 7 * 9 * 8 * 12 and out["params_before"] == 864
    assert out["params"] == 4 * (8 + 9 + 12)
    assert out["rel_error"] == pytest.approx(report.layers[0].rel_error)
    assert out["seconds"] > 0

    frozen = single_layer_probe(convnet, train, test, method="cpd", steps=0, key=key, compress_kwargs=FAST)
    assert frozen("conv2", 4)["accuracy"] == untuned == frozen("conv2", 4)["accuracy_before_finetune"]
    after = _params(convnet)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the model itself is never changed


def test_rank_search_with_the_single_layer_probe_and_its_cache(convnet, mnist, tmp_path):
    train, test = mnist
    probe = single_layer_probe(convnet, train, test, method="svd", steps=0)
    baseline = evaluate(convnet, test)["top1"]
    bounds = rank_bounds(convnet, ["proj"], "svd")
    cache = tmp_path / "cache.json"
    result = rank_search(
        probe, {"proj": (5, 8)}, baseline=baseline, eps=0.02, cache=cache, tag="svd, 0 steps"
    )
    assert bounds == {"proj": (1, 8)} and len(result.probes) in (2, 3)
    flops = [p.extra["flops"] for p in result.probes]
    assert flops == [p.rank * 7 * 7 * (16 + 16) for p in result.probes]  # two 1x1 convs at 7x7
    found = [p for p in result.probes if p.rank == result.ranks["proj"]]
    assert result.met["proj"] == (baseline - found[0].accuracy <= 0.02)
    replay = rank_search(
        _refuse, {"proj": (5, 8)}, baseline=baseline, eps=0.02, cache=cache, tag="svd, 0 steps"
    )
    assert replay == result


def _refuse(layer, rank):
    raise AssertionError(f"probe({layer!r}, {rank}) called although cached")


def test_plot_has_one_panel_per_layer_and_the_eps_line(tmp_path):
    results = {}
    for method, shift in (("cpd", 4), ("cpd-epc", 2), ("tkd-cpd-epc", 0)):
        curves = {name: step_curve(t + shift) for name, t in (("l1", 3), ("l2", 6), ("l3", 9))}
        layers = (
            {"l1": (1, 16), "l2": (1, 16), "l3": (1, 16)}
            if method != "cpd"
            else {"l1": (1, 16), "l2": (1, 16)}
        )
        results[method] = rank_search(CountingProbe(curves, extra=True), layers, baseline=BASELINE, eps=EPS)
    path = tmp_path / "fig" / "fig6.png"
    fig = plot_rank_search(results, path, ncols=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 3  # the unused fourth cell of the 2x2 grid is removed
    assert [ax.get_title() for ax in fig.axes] == ["l1", "l2", "l3"]
    for ax, methods in zip(fig.axes, (3, 3, 2), strict=True):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == list(results)[3 - methods :]
        levels = [
            line.get_ydata()[0] for line in ax.lines if list(line.get_ydata()) == [line.get_ydata()[0]] * 2
        ]
        assert BASELINE - EPS in levels
        assert ax.get_xlabel().startswith("layer FLOPs")
    xs = sorted(fig.axes[2].collections[0].get_offsets()[:, 0])
    assert xs == sorted(p.extra["flops"] for p in results["cpd-epc"].layer_probes("l3"))
    with pytest.raises(ValueError, match=r"^results\['cpd'\] must be a RankSearchResult"):
        plot_rank_search({"cpd": {}}, tmp_path / "x.png")
