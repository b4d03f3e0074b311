"""The experiment pipeline: plans per strategy, the rank search through a config, resuming, speed."""

import json

import numpy as np
import pytest
from flax import nnx

import jaxcpd
from jaxcpd.experiments import RunSummary, config_from_dict, forward_ms, make_plan, run_experiment
from jaxcpd.experiments import pipeline as pipeline_module
from jaxcpd.experiments.pipeline import load_base_model

TINY = {
    "name": "tiny",
    "model": {"arch": "resnet18", "small_input": True, "width": 8},  # the width of the other end-to-end tests
    "data": {"name": "mnist-subset", "batch_size": 32, "eval_batch_size": 500},
    "finetune": {"steps": 1, "log_every": 1},
    "speed": {"repeats": 0},
}


@pytest.fixture(scope="module")
def tiny_model():
    return load_base_model(config_from_dict(TINY))[0]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["compression.strategy=flops"], lambda m: jaxcpd.plan_for_flops(m, (1, 28, 28, 1), 3.0, "cpd-epc")),
        (["compression.strategy=uniform", "compression.rank_ratio=0.25"],
         lambda m: jaxcpd.plan_uniform(m, "cpd-epc", 0.25)),
        (["compression.strategy=vbmf", "compression.one_by_one=keep"],
         lambda m: jaxcpd.plan_from_vbmf(m, "cpd-epc", one_by_one="keep")),
    ],
)  # fmt: skip
def test_strategies_are_the_plan_builders(tiny_model, overrides, expected, tmp_path):
    config = config_from_dict(TINY, overrides)
    plan, search = make_plan(tiny_model, "cpd-epc", config, (1, 28, 28, 1), run_dir=tmp_path, train=None,
                             test=None, baseline_top1=None, progress=False)  # fmt: skip
    assert plan == expected(tiny_model) and search is None


def test_plan_files_and_layer_subsets(tiny_model, tmp_path):
    plan = {
        "layer2.0.conv1": jaxcpd.LayerPlan("cpd", rank=5),
        "layer3.0.downsample.0": jaxcpd.LayerPlan("svd", rank=4),
    }
    path = jaxcpd.save_plan(plan, tmp_path / "plan.yaml")
    config = config_from_dict(TINY, ["compression.strategy=plan", f"compression.plan={path}"])
    got, _ = make_plan(tiny_model, "cpd-epc", config, None, run_dir=tmp_path, train=None, test=None,
                       baseline_top1=None, progress=False)  # fmt: skip
    assert got == plan
    config = config_from_dict(TINY, ["compression.layers=[layer1.0.conv1, nope]"])
    with pytest.raises(ValueError, match=r"compression.layers: not planned layers \['nope'\]"):
        make_plan(tiny_model, "cpd", config, (1, 28, 28, 1), run_dir=tmp_path, train=None, test=None,
                  baseline_top1=None, progress=False)  # fmt: skip


def test_rank_search_strategy_end_to_end_and_resume(tmp_path, monkeypatch):
    """Section 3 through a config: the searched ranks become the plan; a resumed run probes nothing."""
    overrides = [
        f"output={tmp_path / 'run'}",
        "compression.methods=[cpd]",
        "compression.strategy=rank_search",
        "compression.include_first=true",
        "compression.layers=[conv1]",  # the 3x3x1x8 stem: ranks 1..4, two probes
        "compression.eps=1.0",  # every rank passes: the search must end at rank 1
        "compression.search_steps=0",
        "compression.search_eval_batches=1",
        "compression.als={max_iter: 5}",
        "resume=true",
    ]
    config = config_from_dict(TINY, overrides)
    calls = []
    real_probe = pipeline_module.single_layer_probe

    def counting_probe(*args, **kwargs):
        probe = real_probe(*args, **kwargs)

        def wrapped(layer, rank):
            calls.append((layer, rank))
            return probe(layer, rank)

        return wrapped

    monkeypatch.setattr(pipeline_module, "single_layer_probe", counting_probe)
    summary = run_experiment(config, progress=False, log=lambda _: None)
    run = tmp_path / "run"
    search = json.loads((run / "cpd" / "rank_search_cpd.json").read_text())
    assert search["ranks"] == {"conv1": 1}
    hi = search["bounds"]["conv1"][1]
    # Halving [1, hi] with every probe passing: floor/ceil(log2(hi)) probes, all at or below the midpoints.
    assert hi == 1 * 8 * 9 // (9 + 1 + 8)  # the largest CP rank with no more weights than the 3x3x1x8 kernel
    assert len(calls) in (int(np.floor(np.log2(hi))), int(np.ceil(np.log2(hi))))
    saved = json.loads((run / "cpd" / "model" / "model.json").read_text())
    assert saved["plan"] == {"conv1": {"method": "cpd", "rank": 1}}
    assert summary.methods[0].layers == 1
    assert (run / "rank_search.png").is_file()
    calls.clear()
    again = run_experiment(config, progress=False, log=lambda _: None)
    assert calls == []  # every probe comes from the cache
    assert again.methods[0].flops_reduction == summary.methods[0].flops_reduction
    assert RunSummary.load(run) == again


def test_forward_ms_times_the_forward_pass():
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    x = np.ones((2, 4), np.float32)
    ms = forward_ms(model, x, repeats=3)
    assert 0 < ms < 10_000
