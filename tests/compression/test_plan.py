"""LayerPlan validation and plan files (YAML/JSON)."""

import json

import pytest
import yaml

import jaxcpd
from jaxcpd import LayerPlan, load_plan, save_plan
from jaxcpd.compression import METHODS, plan_from_dict, plan_to_dict

PLAN = {
    "layer1.0.conv1": LayerPlan("cpd-epc", rank=90),
    "layer1.0.conv2": LayerPlan("cpd", rank=12),
    "layer2.0.conv1": LayerPlan("tkd-cpd-epc", rank=40, ranks=(32, 48)),
    "layer2.0.conv2": LayerPlan("tkd-cpd", rank=20, error_bound=0.3),
    "layer2.1.conv1": LayerPlan("tucker2", ranks=(16, 24)),
    "layer2.1.conv2": LayerPlan("tucker2", error_bound=0.25),
    "layer2.0.downsample.0": LayerPlan("svd", rank=14),
    "layer3.0.downsample.0": LayerPlan("svd", error_bound=0.1),
    "fc": LayerPlan("keep"),
}


def test_methods_are_the_issue_list():
    assert METHODS == ("cpd", "cpd-epc", "tkd-cpd-epc", "tkd-cpd", "tucker2", "svd", "keep")


def test_valid_entries_normalise_their_fields():
    entry = LayerPlan("tkd-cpd", rank=5, ranks=[3, 4])
    assert entry.ranks == (3, 4) and isinstance(entry.ranks, tuple)
    assert LayerPlan("svd", error_bound=0.5).error_bound == 0.5
    with pytest.raises(AttributeError):
        entry.rank = 6  # frozen: entries are hashable plan keys
    assert hash(LayerPlan("cpd", rank=3)) == hash(LayerPlan("cpd", rank=3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "cp"}, r"method must be one of \('cpd', 'cpd-epc', .*'keep'\), got 'cp'"),
        ({"method": "cpd"}, r"method 'cpd' needs rank"),
        ({"method": "cpd-epc", "rank": 0}, r"rank must be >= 1, got 0"),
        ({"method": "cpd-epc", "rank": 2.5}, r"rank must be a positive int, got 2.5"),
        ({"method": "cpd", "rank": 4, "ranks": (2, 2)},
         r"method 'cpd' takes rank only, not ranks or error_bound"),
        ({"method": "cpd-epc", "rank": 4, "error_bound": 0.1}, r"method 'cpd-epc' takes rank only"),
        ({"method": "tkd-cpd-epc", "rank": 4},
         r"method 'tkd-cpd-epc' needs exactly one of ranks=\(R1, R2\) or error_bound"),
        ({"method": "tkd-cpd", "ranks": (2, 2)}, r"method 'tkd-cpd' needs rank"),
        ({"method": "tucker2", "ranks": (2, 2), "error_bound": 0.1},
         r"method 'tucker2' needs exactly one of"),
        ({"method": "tucker2", "ranks": (2, 2), "rank": 3},
         r"method 'tucker2' takes ranks or error_bound, not rank"),
        ({"method": "tucker2", "ranks": (2, 2, 2)}, r"ranks must be a pair \(R1, R2\), got \(2, 2, 2\)"),
        ({"method": "tucker2", "ranks": 4}, r"ranks must be a pair \(R1, R2\), got 4"),
        ({"method": "tucker2", "ranks": (2, -1)}, r"ranks\[1\] must be >= 1, got -1"),
        ({"method": "svd"}, r"method 'svd' needs rank"),
        ({"method": "svd", "rank": 3, "error_bound": 0.1},
         r"method 'svd' needs exactly one of rank or error_bound"),
        ({"method": "svd", "ranks": (2, 2), "error_bound": 0.1},
         r"method 'svd' takes rank or error_bound, not ranks"),
        ({"method": "svd", "error_bound": 1.0}, r"error_bound must be in \(0, 1\), got 1.0"),
        ({"method": "svd", "error_bound": 0.0}, r"error_bound must be in \(0, 1\)"),
        ({"method": "keep", "rank": 3}, r"method 'keep' takes no ranks"),
    ],
)
def test_invalid_entries_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LayerPlan(**kwargs)


def test_to_dict_omits_unset_fields():
    assert LayerPlan("cpd-epc", rank=4).to_dict() == {"method": "cpd-epc", "rank": 4}
    want = {"method": "tkd-cpd", "rank": 4, "ranks": [2, 3]}
    assert LayerPlan("tkd-cpd", rank=4, ranks=(2, 3)).to_dict() == want
    assert LayerPlan("keep").to_dict() == {"method": "keep"}


def test_plain_data_round_trip():
    data = plan_to_dict(PLAN)
    assert json.loads(json.dumps(data)) == data  # plain JSON types only
    assert plan_from_dict(data) == PLAN
    assert plan_from_dict({"a": "keep", "b": {"method": "svd", "rank": 2}}) == {
        "a": LayerPlan("keep"), "b": LayerPlan("svd", rank=2)}


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    path = save_plan(PLAN, tmp_path / f"plan{suffix}")
    assert path == tmp_path / f"plan{suffix}"
    assert load_plan(path) == PLAN
    assert list(load_plan(path)) == list(PLAN)  # layer order is kept
    text = path.read_text()
    parsed = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert parsed["layer2.0.conv1"] == {"method": "tkd-cpd-epc", "rank": 40, "ranks": [32, 48]}


def test_hand_written_yaml_plan(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "layer1.0.conv1: {method: cpd-epc, rank: 30}\n"
        "layer2.0.downsample.0:\n  method: svd\n  error_bound: 0.2\n"
        "fc: keep\n"
    )
    assert jaxcpd.load_plan(path) == {
        "layer1.0.conv1": LayerPlan("cpd-epc", rank=30),
        "layer2.0.downsample.0": LayerPlan("svd", error_bound=0.2),
        "fc": LayerPlan("keep"),
    }


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([1, 2], r"a plan must be a mapping of layer names to entries, got list"),
        (None, r"a plan must be a mapping of layer names to entries, got NoneType"),
        ({"conv": 3}, r"plan entry 'conv' must be a mapping, got 3"),
        ({"conv": {"method": "cpd", "rank": 3, "rnak": 2}},
         r"plan entry 'conv' has unknown keys \['rnak'\]; valid keys: method, rank, ranks, error_bound"),
        ({"conv": {"rank": 3}}, r"plan entry 'conv' needs a method"),
        ({"conv": {"method": "cpd", "rank": -3}}, r"plan entry 'conv': rank must be >= 1, got -3"),
        ({"conv": "tucker"}, r"plan entry 'conv': method must be one of"),
    ],
)
def test_bad_plain_data_raises(data, match):
    with pytest.raises(ValueError, match=match):
        plan_from_dict(data)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("plan.yaml", "conv: {method: cpd, rank: 3, ranks: [1, 2]}\n",
         r"plan entry 'conv': method 'cpd' takes"),
        ("plan.yaml", "", r"a plan must be a mapping .* got NoneType"),
        ("plan.yaml", "- conv\n- fc\n", r"a plan must be a mapping .* got list"),
        ("plan.yaml", "conv: {method: cpd, rank: [3\n", r"plan file .*plan.yaml is not valid YAML"),
        ("plan.json", '{"conv": {"method": "cpd", "rank": 3}', r"plan file .*plan.json is not valid JSON"),
        ("plan.json", '{"conv": {"method": "svd", "bound": 0.1}}', r"plan entry 'conv' has unknown keys"),
    ],
)
def test_bad_plan_files_raise(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_plan(path)


def test_missing_plan_file_raises(tmp_path):
    with pytest.raises(ValueError, match=r"plan file not found: .*nope.yaml"):
        load_plan(tmp_path / "nope.yaml")
