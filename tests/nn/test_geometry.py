import numpy as np
import pytest
from flax import nnx

from jaxcpd.nn import ConvGeometry, conv_config
from jaxcpd.nn._geometry import canonical_padding, make_geometry


def _conv(*args, **kwargs):
    return nnx.eval_shape(lambda: nnx.Conv(*args, rngs=nnx.Rngs(0), **kwargs))


@pytest.mark.parametrize(
    ("padding", "expected"),
    [("same", "SAME"), ("VALID", "VALID"), ("SAME_LOWER", "SAME_LOWER"), (1, ((1, 1), (1, 1))),
     ((1, 2), ((1, 1), (2, 2))), ([(0, 1), 3], ((0, 1), (3, 3))), (((3, 3), (3, 3)), ((3, 3), (3, 3)))],
)
def test_canonical_padding_follows_flax(padding, expected):
    assert canonical_padding(padding) == expected


def test_conv_config_of_torchvision_style_convs():
    assert conv_config(_conv(64, 128, (3, 3), 2, padding=1, use_bias=False)) == {
        "kernel_size": (3, 3), "strides": (2, 2), "padding": ((1, 1), (1, 1)), "dilation": (1, 1)}
    assert conv_config(_conv(3, 64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), kernel_dilation=(1, 2))) == {
        "kernel_size": (7, 7), "strides": (2, 2), "padding": ((3, 3), (3, 3)), "dilation": (1, 2)}
    assert conv_config(_conv(8, 8, (1, 1)))["padding"] == "SAME"


@pytest.mark.parametrize(
    ("conv", "match"),
    [
        (lambda: _conv(8, 16, (3, 3), feature_group_count=8),
         r"feature_group_count must be 1, got 8 \(grouped conv 8->16\)"),
        (lambda: _conv(8, 16, (3, 3), input_dilation=2), r"input_dilation must be 1, got 2"),
        (lambda: _conv(8, 16, (3, 3), mask=np.ones((3, 3, 8, 16))), r"must not be masked, got a mask"),
        (lambda: _conv(8, 16, 3), r"conv must be 2-D, got kernel_size \(3,\)"),
        (lambda: _conv(8, 16, (3, 3), padding="CIRCULAR"), r"padding must be one of"),
        (lambda: nnx.eval_shape(lambda: nnx.Linear(3, 4, rngs=nnx.Rngs(0))), r"flax.nnx.Conv, got Linear"),
    ],
)
def test_conv_config_rejects_convs_a_block_cannot_represent(conv, match):
    with pytest.raises(ValueError, match=match):
        conv_config(conv())


def test_output_size_and_pads():
    geometry = make_geometry(3, 2, "SAME", 2)
    assert isinstance(geometry, ConvGeometry)
    assert geometry.dilated_kernel() == (5, 5)
    assert geometry.pads((13, 17)) == ((2, 2), (2, 2))
    assert geometry.output_hw((13, 17)) == (7, 9)
    assert make_geometry((3, 1), 1, "VALID").output_hw((13, 17)) == (11, 17)


@pytest.mark.parametrize(
    ("padding", "match"),
    [
        ("circular", r"padding must be one of"),
        ((1, 2, 3), r"one entry per spatial axis \(2\)"),
        ((1, "a"), r"padding\[1\] must be an int or a \(lo, hi\) pair, got 'a'"),
        (-1, r"padding must be an int >= 0"),
        (True, r"padding must have one entry per spatial axis"),
    ],
)
def test_bad_padding_raises(padding, match):
    with pytest.raises(ValueError, match=match):
        canonical_padding(padding)
