"""Dotted torchvision-style names: lookup, replacement and conv-slot listing."""

import pytest
from models_testing import StandIn, abstract

from jaxcpd.models import (
    get_submodule,
    is_conv_slot,
    named_convs,
    named_modules,
    resnet18,
    set_submodule,
    vgg16,
)


def test_get_submodule_resolves_attributes_and_indices():
    model = abstract(resnet18)
    assert get_submodule(model, "layer4.1.conv1") is model.layer4[1].conv1
    assert get_submodule(model, "layer4.0.downsample.0") is model.layer4[0].downsample[0]
    assert get_submodule(model, "fc") is model.fc
    assert get_submodule(model, "") is model
    vgg = abstract(vgg16)
    assert get_submodule(vgg, "features.28") is vgg.features[28]
    assert get_submodule(vgg, "classifier.0") is vgg.classifier[0]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("layer5", r"the root \(ResNet\) has no child 'layer5'"),
        ("layer4.2.conv1", r"'layer4' \(Sequential\) has no child '2'; its children are: 0, 1"),
        ("layer1.0.downsample", r"'layer1.0' \(BasicBlock\) has no child 'downsample'"),
        ("layer1.0.conv1.kernel", r"'layer1.0.conv1' \(Conv\) has no child 'kernel'; its children are: none"),
    ],
)
def test_get_submodule_errors_name_the_missing_part(name, match):
    with pytest.raises(ValueError, match=match):
        get_submodule(abstract(resnet18), name)


def test_named_modules_is_depth_first_in_definition_order():
    names = [name for name, _ in named_modules(abstract(resnet18))]
    assert names[:6] == ["", "conv1", "bn1", "maxpool", "layer1", "layer1.0"]
    assert names.index("layer2.0.downsample.1") == names.index("layer2.0.downsample.0") + 1
    assert names[-1] == "fc"


def test_set_submodule_puts_a_block_in_a_conv_slot():
    model = abstract(resnet18)
    conv = model.layer4[1].conv1
    block = StandIn(conv)
    set_submodule(model, "layer4.1.conv1", block)
    assert model.layer4[1].conv1 is block
    assert is_conv_slot(block) and not is_conv_slot(model.bn1)
    convs = dict(named_convs(model))
    assert convs["layer4.1.conv1"] is block  # the block itself, not its inner conv
    assert "layer4.1.conv1.inner" not in convs
    assert len(convs) == 20
    set_submodule(model, "layer2.0.downsample.0", StandIn(model.layer2[0].downsample[0]))
    assert isinstance(model.layer2[0].downsample[0], StandIn)


def test_set_submodule_validates():
    model = abstract(resnet18)
    with pytest.raises(ValueError, match="no child 'conv9'"):
        set_submodule(model, "layer1.0.conv9", StandIn(model.conv1))
    with pytest.raises(ValueError, match="must be an nnx.Module"):
        set_submodule(model, "conv1", lambda x: x)
    with pytest.raises(ValueError, match="name must name a submodule"):
        set_submodule(model, "", StandIn(model.conv1))
    assert not hasattr(model.layer1[0], "conv9")
