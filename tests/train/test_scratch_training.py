"""End to end on the embedded data: a small-input ResNet-18 trained from scratch on a short budget."""

from __future__ import annotations

import dataclasses
import itertools

from flax import nnx

from jaxcpd.models import resnet18
from jaxcpd.train import SCRATCH_CONFIG, evaluate, load, train_from_scratch

# 20 steps of 16 images (320 of the 4000 training digits, 0.08 epoch), evaluated on the
# first 250 test digits. Measured: top-1 0.832, top-5 0.960 (a guess is 0.1 / 0.5).
STEPS, BATCH, MIN_TOP1 = 20, 16, 0.6


def test_resnet18_from_scratch_learns_the_digits(mnist_test):
    train = load("mnist-subset", "train", batch_size=BATCH)
    test = list(itertools.islice(iter(mnist_test), 1))
    model = resnet18(num_classes=10, small_input=True, in_channels=1, rngs=nnx.Rngs(0))
    config = dataclasses.replace(
        SCRATCH_CONFIG, steps=STEPS, learning_rate=0.05, log_every=10, progress=False
    )
    model, history = train_from_scratch(model, train, test, config)
    final = history[-1]
    assert final["kind"] == "eval" and final["step"] == STEPS
    assert final["top1"] >= MIN_TOP1, final
    assert history[1]["loss"] < history[0]["loss"]  # train records at steps 10 and 20
    assert evaluate(model, test) == {key: final[key] for key in ("top1", "top5", "loss")}
