"""Fixtures of tests/compression: one small-input ResNet-18 and its compressed copies, built once.

Building ResNet-18 and compiling each decomposition shape are the expensive steps
(tens of seconds on the test machines), so the models are session-scoped and
shared read-only by the test modules; tests that change a model clone it first.
"""

from __future__ import annotations

import dataclasses

import pytest
from compression_testing import (
    EXACT_RANK,
    FAST,
    LOSSLESS_ALS,
    LOSSLESS_PLAN,
    SMALL_RESNET18,
    cp_kernel,
    images,
    snapshot,
)
from flax import nnx

import jaxcpd
from jaxcpd.compression import build_model
from jaxcpd.models import get_submodule

# The planned subset of the rank-ratio-1/3 plan.
THIRD_LAYERS = ("layer1.", "layer2.0.conv1", "layer2.0.downsample.0", "fc")


@dataclasses.dataclass
class Compressed:
    original: nnx.Module
    model: nnx.Module
    plan: dict
    report: jaxcpd.CompressionReport
    before: list  # snapshot of the original's state before compress


@pytest.fixture(scope="session")
def resnet18():
    """The small-input ResNet-18 (random init). Read-only: clone it before changing it."""
    return build_model(SMALL_RESNET18, seed=0)


@pytest.fixture(scope="session")
def batch():
    return images(0)


@pytest.fixture(scope="session")
def compressed_third(resnet18):
    """cpd-epc at rank ratio 1/3 (``plan_uniform``) on layer1, layer2.0's conv1 and shortcut, and fc.

    Covers a vmapped group of four equal 3x3 convs, a stride-2 3x3 conv, a stride-2
    1x1 conv (SVD) and the dense layer (SVD); the other layers are kept, which the
    properties tested do not need and which would take minutes to decompose here.
    """
    full = jaxcpd.plan_uniform(resnet18, "cpd-epc", rank_ratio=1 / 3, include_fc=True)
    plan = {name: entry for name, entry in full.items() if name.startswith(THIRD_LAYERS)}
    before = snapshot(resnet18)
    model, report = jaxcpd.compress(resnet18, plan, progress=False, **FAST)
    return Compressed(resnet18, model, plan, report, before)


@pytest.fixture(scope="session")
def lossless(resnet18):
    """:data:`LOSSLESS_PLAN` applied to a copy of ResNet-18 whose CP/TKD kernels have CP rank 6."""
    original = nnx.clone(resnet18)
    for index, (name, entry) in enumerate(LOSSLESS_PLAN.items()):
        if entry.method in ("cpd", "cpd-epc", "tkd-cpd", "tkd-cpd-epc"):
            conv = get_submodule(original, name)
            std = float(conv.kernel[...].std())
            conv.kernel.set_value(cp_kernel(conv.kernel.shape, EXACT_RANK, 10 * index, std=std))
    before = snapshot(original)
    model, report = jaxcpd.compress(
        original,
        LOSSLESS_PLAN,
        progress=False,
        on_growth="ignore",  # full Tucker-2 and SVD ranks hold more weights than the layers
        als_kwargs=LOSSLESS_ALS,
        epc_kwargs={"max_iter": 5},
    )
    return Compressed(original, model, LOSSLESS_PLAN, report, before)
