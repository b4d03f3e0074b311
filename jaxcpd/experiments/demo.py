"""The ``jaxcpd demo`` experiment: CPD vs CPD-EPC vs TKD-CPD-EPC on the embedded MNIST digits.

A narrow small-input ResNet-18 (base width 16, 0.7 M parameters) is trained from
scratch on the 4,000 training digits of ``mnist-subset``, every ``3 x 3`` conv but the
stem is compressed by each method at the same 3x whole-model FLOP reduction
(``plan_for_flops``), and each compressed copy is fine-tuned with the paper's recipe
(SGD momentum, lr 1e-3) for a short budget. ALS and EPC run at most 100 and 30 sweeps
(library defaults 200 and 50) to keep the whole demo within minutes on 2 CPU cores.
``configs/demo.yaml`` is this config as a file; ``quick=True`` is the test suite's
tiny budget (a few steps, two layers).
"""

from __future__ import annotations

from .config import ExperimentConfig, config_from_dict

DEMO = {
    "name": "demo",
    "seed": 0,
    "output": "runs/demo",
    "model": {"arch": "resnet18", "small_input": True, "width": 16},
    "data": {"name": "mnist-subset", "batch_size": 64, "eval_batch_size": 250},
    "baseline": {
        "train": True,
        "steps": 100,
        "optimizer": "momentum",
        "learning_rate": 0.05,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "eval_every": 50,
        "log_every": 10,
    },
    "compression": {
        "methods": ["cpd", "cpd-epc", "tkd-cpd-epc"],
        "strategy": "flops",
        "target_reduction": 3.0,
        "one_by_one": "keep",
        "als": {"max_iter": 100},
        "epc": {"max_iter": 30},
    },
    "finetune": {
        "steps": 50,
        "learning_rate": 1e-3,
        "schedule": "constant",
        "eval_every": 25,
        "log_every": 10,
    },
    "speed": {"batch_size": 32, "repeats": 5},
}
"""The demo experiment as plain config data (``configs/demo.yaml`` holds the same)."""

QUICK = [
    "model.width=8",
    "baseline.steps=4",
    "baseline.eval_every=2",
    "compression.layers=[layer3.0.conv2, layer3.1.conv1]",
    "compression.als={max_iter: 20}",
    "compression.epc={max_iter: 5}",
    "finetune.steps=3",
    "finetune.eval_every=3",
    "speed.repeats=1",
]
"""Overrides of the tiny budget (``jaxcpd demo --quick``): the pipeline end to end in about a minute."""


def demo_config(*, quick: bool = False, overrides=()) -> ExperimentConfig:
    """The demo's config; ``quick`` applies :data:`QUICK`, then ``overrides`` (``key=value``)."""
    return config_from_dict(DEMO, [*(QUICK if quick else []), *overrides])
