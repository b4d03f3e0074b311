"""Test helpers for tests/train: a tiny BatchNorm CNN."""

from __future__ import annotations

from flax import nnx


class TinyCNN(nnx.Module):
    """conv-BN-ReLU x2, global average pooling, linear: the smallest model with the layers that matter."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(in_channels, width, (3, 3), strides=2, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(width, rngs=rngs)
        self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=2, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(2 * width, rngs=rngs)
        self.fc = nnx.Linear(2 * width, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(axis=(1, 2)))
