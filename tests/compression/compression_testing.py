"""Helpers for tests/compression: a tiny conv net, exact low-rank kernels, reference errors."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from jaxcpd import LayerPlan

# The small-input ResNet-18 every test here compresses (32x32 inputs keep it cheap).
SMALL_RESNET18 = {"name": "resnet18", "num_classes": 10, "small_input": True}
INPUT_SHAPE = (1, 32, 32, 3)

# Short ALS/EPC runs: enough for the properties tested, few compilations and sweeps.
FAST = {"als_kwargs": {"max_iter": 30}, "epc_kwargs": {"max_iter": 5}}

# Exact CP rank of the kernels overwritten for the lossless CP and TKD-CPD layers.
EXACT_RANK = 6
# Lossless plan: every method once, on the cheapest layers; the kept layers are untouched.
# Tucker-2 and SVD are exact at full ranks for any kernel; the CP methods need the
# overwritten kernels of CP rank 6 (random kernels have a high CP rank).
LOSSLESS_PLAN = {
    "conv1": LayerPlan("tucker2", ranks=(3, 64)),
    "layer1.0.conv1": LayerPlan("cpd", rank=EXACT_RANK),
    "layer1.0.conv2": LayerPlan("cpd-epc", rank=EXACT_RANK),
    "layer1.1.conv1": LayerPlan("tkd-cpd-epc", rank=EXACT_RANK, ranks=(64, 64)),
    "layer1.1.conv2": LayerPlan("tucker2", ranks=(64, 64)),
    "layer2.0.conv1": LayerPlan("tkd-cpd", rank=EXACT_RANK, ranks=(64, 128)),  # stride 2
    "layer2.0.downsample.0": LayerPlan("svd", rank=64),  # 1x1, stride 2
    "layer3.0.downsample.0": LayerPlan("svd", rank=128),
    "fc": LayerPlan("svd", rank=10),
}
LOSSLESS_ALS = {"max_iter": 100, "tol": 1e-12}


class TinyNet(nnx.Module):
    """Every kind of layer a plan can name, at sizes that decompose in milliseconds.

    ``stem`` 3x3 3->A, ``conv`` 3x3 A->B stride 2 with bias, ``bn``, ``depthwise``
    (grouped 3x3, not decomposable), ``proj`` 1x1 B->C, ``fc`` dense C->10, with
    ``(A, B, C) = widths``.
    """

    child_order = ("stem", "conv", "bn", "depthwise", "proj", "fc")

    def __init__(self, widths=(8, 12, 16), *, rngs: nnx.Rngs):
        a, b, c = widths
        self.stem = nnx.Conv(3, a, (3, 3), use_bias=False, rngs=rngs)
        self.conv = nnx.Conv(a, b, (3, 3), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
        self.bn = nnx.BatchNorm(b, rngs=rngs)
        self.depthwise = nnx.Conv(b, b, (3, 3), feature_group_count=b, use_bias=False, rngs=rngs)
        self.proj = nnx.Conv(b, c, (1, 1), use_bias=False, rngs=rngs)
        self.fc = nnx.Linear(c, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem(x))
        x = nnx.relu(self.bn(self.conv(x)))
        x = self.proj(self.depthwise(x))
        return self.fc(x.mean(axis=(1, 2)))


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def cp_kernel(shape, rank, seed, *, std=None):
    """An HWIO kernel of exact CP rank ``rank`` (random factors), float32, scaled to ``std``."""
    kh, kw, s, t = shape
    a, b, c = normal(seed, (kh * kw, rank)), normal(seed + 1, (s, rank)), normal(seed + 2, (t, rank))
    kernel = np.einsum("pr,sr,tr->pst", a, b, c).reshape(shape)
    if std is not None:
        kernel *= std / kernel.std()
    return kernel.astype(np.float32)


def tucker_kernel(shape, ranks, seed, *, noise=0.0):
    """An HWIO kernel of multilinear ranks ``ranks`` on the channel modes, plus relative ``noise``."""
    kh, kw, s, t = shape
    r1, r2 = ranks
    core, u, v = normal(seed, (kh * kw, r1, r2)), normal(seed + 1, (s, r1)), normal(seed + 2, (t, r2))
    tensor = np.einsum("pab,sa,tb->pst", core, u, v)
    extra = normal(seed + 3, tensor.shape)
    tensor += noise * extra * np.linalg.norm(tensor) / np.linalg.norm(extra)
    return tensor.reshape(shape).astype(np.float32)


def rel_err(approx, exact):
    approx, exact = np.asarray(approx, np.float64), np.asarray(exact, np.float64)
    return np.linalg.norm(approx - exact) / np.linalg.norm(exact)


def snapshot(model) -> list[np.ndarray]:
    """Copies of every array of a model's state (parameters, batch statistics ...)."""
    return [np.array(leaf) for leaf in jax.tree.leaves(nnx.state(model))]


def images(seed, shape=(4, 32, 32, 3)):
    return normal(seed, shape).astype(np.float32)


def eval_logits(model, x):
    """Logits in evaluation mode (running batch statistics); ``model``'s own mode is left as it is."""
    return np.asarray(nnx.view(model, use_running_average=True, raise_if_not_found=False)(x))
