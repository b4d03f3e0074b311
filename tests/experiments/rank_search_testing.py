"""Helpers for tests/experiments: synthetic accuracy curves, a call-counting probe, a tiny conv net."""

from __future__ import annotations

from flax import nnx

BASELINE = 0.75
STEP = 0.01  # accuracy lost per rank below the threshold
EPS = 0.005  # less than one step: exactly the ranks >= threshold pass


def step_curve(threshold: int, *, baseline: float = BASELINE, step: float = STEP):
    """``accuracy(r) = baseline - max(0, threshold - r) * step``: monotone, passing from ``threshold`` on."""

    def accuracy(rank: int) -> float:
        return baseline - max(0, threshold - rank) * step

    return accuracy


class CountingProbe:
    """A probe over per-layer accuracy curves that records its calls and can stop after ``stop_after``.

    Raising ``KeyboardInterrupt`` on call ``stop_after + 1`` stands for a user pressing
    Ctrl-C (or the job being killed) in the middle of a probe.
    """

    def __init__(self, curves: dict, *, stop_after: int | None = None, extra: bool = False):
        self.curves, self.stop_after, self.extra = curves, stop_after, extra
        self.calls: list[tuple[str, int]] = []

    def __call__(self, layer: str, rank: int):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append((layer, rank))
        accuracy = self.curves[layer](rank)
        if self.extra:
            return {"accuracy": accuracy, "flops": 1000 * rank, "params": 10 * rank, "note": "synthetic"}
        return accuracy


class ConvNet(nnx.Module):
    """Three 3x3 convs with BatchNorm on 28x28x1 inputs, global average pooling, a dense classifier."""

    def __init__(self, widths=(8, 12, 16), *, rngs: nnx.Rngs):
        a, b, c = widths
        self.conv1 = nnx.Conv(1, a, (3, 3), strides=2, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(a, rngs=rngs)
        self.conv2 = nnx.Conv(a, b, (3, 3), strides=2, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(b, rngs=rngs)
        self.conv3 = nnx.Conv(b, c, (3, 3), use_bias=True, rngs=rngs)
        self.proj = nnx.Conv(c, c, (1, 1), use_bias=False, rngs=rngs)
        self.fc = nnx.Linear(c, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.relu(self.bn2(self.conv2(x)))
        x = nnx.relu(self.proj(self.conv3(x)))
        return self.fc(x.mean(axis=(1, 2)))
