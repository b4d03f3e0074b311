"""Fixtures of tests/train: a tiny BatchNorm CNN and embedded-data loaders."""

from __future__ import annotations

import pytest
from flax import nnx
from train_testing import TinyCNN

from jaxcpd.train import load


@pytest.fixture
def tiny_cnn():
    return TinyCNN(rngs=nnx.Rngs(0))


@pytest.fixture(scope="session")
def mnist_train():
    return load("mnist-subset", "train", batch_size=32)


@pytest.fixture(scope="session")
def mnist_test():
    return load("mnist-subset", "test", batch_size=250)
