"""Experiment configs: defaults, YAML files, ``--set`` overrides and the errors they give."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from jaxcpd.experiments import (
    DEMO,
    QUICK,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    demo_config,
    load_config,
    save_config,
)
from jaxcpd.experiments.config import CompressionConfig, DataConfig, ModelConfig
from jaxcpd.train import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_empty_config_is_all_defaults():
    config = config_from_dict({})
    assert config == ExperimentConfig()
    assert config.finetune == TrainConfig()  # the paper's recipe: SGD momentum, lr 1e-3, wd 1e-4
    assert config.run_dir == Path("runs/experiment")
    assert config_from_dict(None) == config


def test_shipped_demo_yaml_is_the_demo_config():
    assert load_config(CONFIGS / "demo.yaml") == demo_config()
    assert demo_config().compression.methods == ("cpd", "cpd-epc", "tkd-cpd-epc")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_state_their_command(path):
    config = load_config(path)
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert header, "each config starts with a comment saying what it reproduces"
    assert any(f"jaxcpd compress configs/{path.name}" in line for line in header)
    if "imagenet" in path.name:
        assert config.data.name == "imagenet2012"
        assert config.compression.strategy == "rank_search"


@pytest.mark.parametrize(
    ("name", "eps"),
    [("resnet18_imagenet", 0.00325), ("resnet50_imagenet", 0.0028), ("vgg16_imagenet", 0.005)],
)
def test_imagenet_configs_use_the_papers_eps(name, eps):
    """Table 1's accuracy-drop thresholds."""
    assert load_config(CONFIGS / f"{name}.yaml").compression.eps == eps


def test_overrides_are_parsed_as_yaml_values():
    config = config_from_dict(
        DEMO,
        [
            "finetune.steps=7",
            "finetune.learning_rate=0.01",
            "compression.methods=[cpd]",
            "compression.als={max_iter: 3, tol: 1e-3}",
            "model.weights=null",
            "data.name=cifar10",
            "compression.layers=layer1.0.conv1",
            "finetune.trainable=[layer1, fc]",
        ],
    )
    assert config.finetune.steps == 7 and config.finetune.learning_rate == 0.01
    assert config.compression.methods == ("cpd",)
    assert config.compression.als == {"max_iter": 3, "tol": 1e-3}
    assert config.compression.layers == ("layer1.0.conv1",)
    assert config.finetune.trainable == ("layer1", "fc")
    assert config.data.name == "cifar10"
    assert config.model.weights is None


def test_overrides_create_missing_sections_and_leave_the_input_alone():
    data = {"name": "x"}
    out = apply_overrides(data, ["speed.repeats=0", "name=y"])
    assert out == {"name": "y", "speed": {"repeats": 0}} and data == {"name": "x"}
    assert config_from_dict(data, ["speed.repeats=0"]).speed.repeats == 0


def test_quick_demo_is_a_tiny_budget():
    quick = demo_config(quick=True)
    assert quick.baseline.steps < 10 and quick.finetune.steps < 10
    assert len(quick.compression.layers) == 2
    assert demo_config(quick=True, overrides=["finetune.steps=5"]).finetune.steps == 5
    assert len(QUICK) == len({item.split("=")[0] for item in QUICK})


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({"modle": {}}, [], "unknown key 'modle'; valid keys: name, seed, output, resume, model, data"),
        ({"finetune": {"stepz": 3}}, [], "unknown key 'stepz' in finetune; valid keys: optimizer,"),
        ({}, ["compression.method=cpd"], "unknown key 'method' in compression; valid keys: methods,"),
        ({}, ["finetune.steps=-1"], "finetune.steps: must be > 0 or None, got -1"),
        ({}, ["finetune.optimizer=adam"], "finetune.optimizer: must be one of sgd, momentum, adamw"),
        ({}, ["finetune.steps=ten"], "finetune.steps: must be an integer, got 'ten'"),
        ({}, ["compression.target_reduction=0.5"], "compression.target_reduction: must be > 1"),
        ({}, ["compression.methods=[cpd, svd]"], "compression.methods: must be one of cpd, cpd-epc"),
        ({}, ["compression.methods=[]"], "compression.methods: needs at least one method"),
        ({}, ["compression.strategy=plan"], "compression.plan: strategy 'plan' needs a plan file"),
        ({}, ["compression.strategy=magic"], "compression.strategy: must be one of flops, uniform"),
        ({}, ["model.arch=resnet101"], "model.arch: must be one of resnet18, resnet34, resnet50, vgg16"),
        ({}, ["model.arch=vgg16", "model.width=16"], "only for ResNets"),
        ({}, ["model.width=0"], "model.width: must be a positive int"),
        ({}, ["data.name=mnist"], "data.name: must be one of"),
        ({}, ["model.small_input=yes please"], "model.small_input: must be true or false"),
        ({}, ["finetune.run_dir=/tmp/x"], "finetune.run_dir: set by the experiment"),
        ({}, ["baseline.resume=true"], "baseline.resume: set by the experiment"),
        ({}, ["steps"], "--set 'steps': expected key=value"),
        ({}, ["finetune..steps=3"], "bad key"),
        ({}, ["finetune.steps=[1"], "value is not valid YAML"),
        ({"finetune": 3}, [], "finetune: must be a mapping"),
        ({"seed": 1}, ["seed.x=1"], "seed is not a section"),
        ([1, 2], [], "config: must be a mapping of sections"),
    ],
)
def test_bad_configs_name_the_key(data, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(data, overrides)


def test_config_errors_are_value_errors():
    assert issubclass(ConfigError, ValueError)


def test_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    config = demo_config(overrides=["finetune.steps=9", "compression.als={max_iter: 4}"])
    path = save_config(config, tmp_path / "config.yaml")
    assert load_config(path) == config
    assert yaml.safe_load(path.read_text())["compression"]["methods"] == ["cpd", "cpd-epc", "tkd-cpd-epc"]


def test_sections_validate_on_their_own():
    assert dataclasses.replace(ModelConfig(), width=8).width == 8
    with pytest.raises(ConfigError, match="data.batch_size"):
        DataConfig(batch_size=0)
    with pytest.raises(ConfigError, match="compression.eps"):
        CompressionConfig(eps=-1.0)
