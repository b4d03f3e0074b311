"""Structure of the ports: names, shapes and argument validation (abstract models, no random init)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from models_testing import PORTS, abstract, import_torch

from jaxcpd.models import named_convs, named_modules, resnet18, resnet34, resnet50, vgg16


def output_shape(model, input_shape):
    """Traces the forward pass of a (possibly abstract) model without running it."""
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x).shape


def param_count(model):
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize(
    ("builder", "kwargs", "input_shape", "expected"),
    [
        (resnet18, {}, (2, 224, 224, 3), (2, 1000)),
        (resnet34, {"num_classes": 100}, (1, 97, 61, 3), (1, 100)),
        (resnet50, {}, (2, 224, 224, 3), (2, 1000)),
        (resnet18, {"small_input": True, "in_channels": 1, "num_classes": 10}, (4, 28, 28, 1), (4, 10)),
        (resnet50, {"small_input": True, "num_classes": 10}, (4, 32, 32, 3), (4, 10)),
        (vgg16, {}, (2, 224, 224, 3), (2, 1000)),
        (vgg16, {"batch_norm": True, "num_classes": 10}, (2, 32, 32, 3), (2, 10)),
        (vgg16, {"in_channels": 1, "num_classes": 10}, (2, 45, 33, 1), (2, 10)),
    ],
)
def test_output_shapes(builder, kwargs, input_shape, expected):
    assert output_shape(abstract(builder, **kwargs), input_shape) == expected


def test_small_input_stem():
    model = abstract(resnet18, small_input=True, in_channels=1)
    assert model.conv1.kernel.get_value().shape == (3, 3, 1, 64)
    assert model.conv1.strides == 1
    assert model.maxpool is None
    imagenet = abstract(resnet18)
    assert imagenet.conv1.kernel.get_value().shape == (7, 7, 3, 64)
    assert imagenet.conv1.padding == ((3, 3), (3, 3))


@pytest.mark.parametrize(("builder", "expansion"), [(resnet18, 1), (resnet50, 4)])
def test_width_scales_every_stage(builder, expansion):
    model = abstract(builder, small_input=True, width=16, num_classes=10)
    assert model.conv1.kernel.get_value().shape == (3, 3, 3, 16)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    for stage, planes in zip(stages, (16, 32, 64, 128), strict=True):
        assert stage[0].conv2.kernel.get_value().shape[-1] == planes
    assert model.fc.kernel.get_value().shape == (128 * expansion, 10)
    assert output_shape(model, (2, 28, 28, 3)) == (2, 10)


@pytest.mark.parametrize("width", [0, 2.5])
def test_bad_width(width):
    with pytest.raises(ValueError, match="width must be a positive int"):
        resnet18(width=width, rngs=nnx.Rngs(0))


def test_resnet_conv_names_follow_torchvision():
    names = [name for name, _ in named_convs(abstract(resnet18))]
    assert names[:4] == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1"]
    assert names[7] == "layer2.0.downsample.0"
    assert names[-1] == "layer4.1.conv2"
    assert len(names) == 20
    assert len(list(named_convs(abstract(resnet34)))) == 36
    names50 = [name for name, _ in named_convs(abstract(resnet50))]
    assert len(names50) == 53
    assert names50[1:5] == ["layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0"]


@pytest.mark.parametrize(("batch_norm", "last"), [(False, "features.28"), (True, "features.40")])
def test_vgg_conv_names_follow_torchvision(batch_norm, last):
    model = abstract(vgg16, batch_norm=batch_norm)
    names = [name for name, _ in named_convs(model)]
    assert len(names) == 13
    assert names[0] == "features.0"
    assert names[-1] == last
    assert model.classifier[0].kernel.get_value().shape == (512 * 7 * 7, 4096)


@pytest.mark.parametrize("name", list(PORTS))
def test_parameter_count_and_module_names_equal_torchvision(name):
    torch, torchvision = import_torch()
    with torch.device("meta"):  # shapes only, no initialisation
        reference = getattr(torchvision.models, name)()
    builder, kwargs = PORTS[name]
    model = abstract(builder, **kwargs)
    assert param_count(model) == sum(p.numel() for p in reference.parameters())
    torch_convs = [n for n, m in reference.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert [n for n, _ in named_convs(model)] == torch_convs
    # every module of ours is a torchvision module of the same name, listed in the same order
    ours = [n for n, _ in named_modules(model)]
    assert ours == [n for n, _ in reference.named_modules() if n in set(ours)]
    assert len(ours) == len(set(ours))


@pytest.mark.parametrize("builder", [resnet18, resnet50, vgg16])
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes must be a positive int, got 0"),
        ({"num_classes": -5}, "num_classes must be a positive int"),
        ({"num_classes": 10.0}, "num_classes must be a positive int"),
        ({"in_channels": 0}, "in_channels must be a positive int"),
    ],
)
def test_bad_arguments(builder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        builder(rngs=nnx.Rngs(0), **kwargs)


@pytest.mark.parametrize("dropout", [1.0, -0.1, "0.5", None])
def test_bad_dropout(dropout):
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\)"):
        vgg16(dropout=dropout, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("builder", [resnet18, vgg16])
def test_nchw_input_is_rejected(builder):
    with pytest.raises(
        ValueError, match=r"expected an NHWC batch \(N, H, W, 3\), got shape \(2, 3, 64, 64\)"
    ):
        output_shape(abstract(builder), (2, 3, 64, 64))


def test_vgg_rejects_inputs_below_32():
    with pytest.raises(ValueError, match="height and width must be >= 32"):
        output_shape(abstract(vgg16), (1, 28, 28, 3))
