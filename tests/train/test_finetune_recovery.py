"""On the embedded data: a small-input ResNet trained from scratch reaches a sane accuracy, and
fine-tuning a compressed copy recovers most of the drop (paper section 3, step 4)."""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

import jaxcpd
from jaxcpd.models import resnet18
from jaxcpd.train import SCRATCH_CONFIG, TrainConfig, evaluate, finetune, load, train_from_scratch

# A width-8 small-input ResNet-18 trained 60 steps of 32 digits; layer3 and layer4's
# 3x3 convs (2/3 of its FLOPs) replaced by CPD-EPC blocks keeping 1/5 of their weights;
# fine-tuned 30 steps with the paper's recipe (SGD momentum 0.9, lr 1e-3).
# Measured: dense top-1 0.790, compressed 0.165 (1.58x fewer FLOPs), fine-tuned 0.585.
BASE_STEPS, FINETUNE_STEPS, BATCH = 60, 30, 32


def test_finetuning_a_compressed_copy_recovers_most_of_the_drop(mnist_test):
    train = load("mnist-subset", "train", batch_size=BATCH)
    model = resnet18(10, small_input=True, in_channels=1, width=8, rngs=nnx.Rngs(0))
    scratch = dataclasses.replace(
        SCRATCH_CONFIG, steps=BASE_STEPS, learning_rate=0.05, log_every=20, progress=False
    )
    model, history = train_from_scratch(model, train, None, scratch)
    assert history[-1]["loss"] < history[0]["loss"]
    dense = evaluate(model, mnist_test)["top1"]

    plan = {
        name: entry
        for name, entry in jaxcpd.plan_uniform(model, "cpd-epc", 0.2, one_by_one="keep").items()
        if name.startswith(("layer3", "layer4"))
    }
    compressed, report = jaxcpd.compress(
        model, plan, key=jax.random.key(0), progress=False,
        als_kwargs={"max_iter": 50}, epc_kwargs={"max_iter": 10},
    )  # fmt: skip
    before = evaluate(compressed, mnist_test)["top1"]
    config = TrainConfig(steps=FINETUNE_STEPS, learning_rate=1e-3, schedule="constant", progress=False)
    compressed, _ = finetune(compressed, train, None, config)
    after = evaluate(compressed, mnist_test)["top1"]

    assert report.flops_reduction > 1.5
    assert dense >= 0.7
    assert dense - before >= 0.1  # the decomposition costs accuracy ...
    assert after - before >= 0.5 * (dense - before)  # ... and fine-tuning wins most of it back
