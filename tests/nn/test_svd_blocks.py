import numpy as np
import pytest
from flax import nnx
from nn_testing import PADDINGS, block_and_reference, make_conv, normal, rel_err

from jaxcpd.nn import SVDConv, SVDDense, conv_config, count_params


def _truncated_svd(w, rank):
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    return u[:, :rank] * s[:rank], vt[:rank].T


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", [*PADDINGS, 0])
def test_svd_conv_equals_dense_conv_of_its_kernel(strides, padding):
    bias = normal(0, (7,)) if strides == 1 else None
    u, v = normal(1, (5, 3)), normal(2, (7, 3))
    block = SVDConv.from_factors(u, v, strides=strides, padding=padding, bias=bias)
    batch = 3 if padding == "VALID" else 1
    got, want = block_and_reference(block, normal(3, (batch, 13, 17, 5)))
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-5


def test_svd_conv_from_truncated_svd_reproduces_a_strided_1x1_conv_up_to_the_svd_error():
    # A ResNet downsample shortcut: 1x1, stride 2, no padding. For i.i.d. inputs the relative output
    # error equals the relative kernel error of the truncated SVD.
    w = normal(4, (64, 8)) @ normal(5, (8, 96)) + 0.3 * normal(6, (64, 96))
    conv = make_conv(w[None, None], normal(7, (96,)), strides=2, padding=((0, 0), (0, 0)))
    u, v = _truncated_svd(w, 8)
    kernel_err = np.linalg.norm(u @ v.T - w) / np.linalg.norm(w)
    block = SVDConv.from_factors(u, v, **conv_config(conv), bias=conv.bias[...])
    x = normal(8, (4, 15, 15, 64))
    want = conv(x)
    got = block(x)
    assert got.shape == want.shape == (4, 8, 8, 96)
    assert 0.05 < kernel_err < 0.5
    out_err = np.linalg.norm(got - want) / np.linalg.norm(want - conv.bias[...])
    assert out_err == pytest.approx(kernel_err, rel=0.05)


def test_svd_dense_matches_nnx_linear():
    w, b = normal(9, (12, 10)), normal(10, (10,))
    u, v = _truncated_svd(w, 10)
    layer = SVDDense.from_factors(u, v, bias=b)
    linear = nnx.eval_shape(lambda: nnx.Linear(12, 10, rngs=nnx.Rngs(0)))
    linear.kernel.set_value(w)
    linear.bias.set_value(b)
    x = normal(11, (2, 3, 12))
    assert rel_err(layer(x), linear(x)) < 1e-5
    np.testing.assert_allclose(layer.dense_kernel(), w, rtol=1e-5, atol=1e-5)
    for got, want in zip(layer.factors(), (u, v), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(layer(x[0, 0]), layer(x)[0, 0], rtol=1e-6, atol=1e-6)


def test_fresh_blocks_and_counts():
    conv = nnx.eval_shape(lambda: SVDConv(256, 512, 64, strides=2, rngs=nnx.Rngs(0)))
    assert conv.num_params() == count_params(conv) == 64 * (256 + 512) + 512
    assert conv.flops((14, 14)) == 7 * 7 * 64 * (256 + 512)
    dense = nnx.eval_shape(lambda: SVDDense(512, 1000, 100, use_bias=False, rngs=nnx.Rngs(0)))
    assert dense.bias is None
    assert dense.num_params() == count_params(dense) == 100 * (512 + 1000)
    assert dense.flops() == 100 * (512 + 1000)
    assert dense.in_proj.shape == (512, 100) and dense.out_proj.shape == (100, 1000)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: SVDConv(8, 6, 3, kernel_size=3, rngs=nnx.Rngs(0)),
         r"SVDConv replaces 1x1 convs: kernel_size must be 1, got \(3, 3\)"),
        (lambda: SVDConv(8, 6, 7, rngs=nnx.Rngs(0)), r"rank must be <= 6, got 7"),
        (lambda: SVDDense(8, 6, 0, rngs=nnx.Rngs(0)), r"rank must be >= 1, got 0"),
        (lambda: SVDDense.from_factors(np.ones((8, 3)), np.ones((6, 2))),
         r"U \(S, R\) and V \(T, R\) must have the same rank R, got U \(8, 3\) and V \(6, 2\)"),
        (lambda: SVDConv.from_factors(np.ones((8, 3)), np.ones((6, 3)), bias=np.ones(8)),
         r"bias must have shape \(6,\), got \(8,\)"),
        (lambda: SVDConv.from_factors(np.ones((8, 3)), np.ones((6, 3)), strides=(1, 0)),
         r"strides\[1\] must be >= 1, got 0"),
    ],
)
def test_bad_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_input_raises():
    layer = SVDDense.from_factors(np.ones((8, 3)), np.ones((6, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., C\) with C=8, got \(2, 7\)"):
        layer(np.ones((2, 7), np.float32))
    conv = SVDConv.from_factors(np.ones((8, 3)), np.ones((6, 3)))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., H, W, C\) with C=8, got \(4, 8\)"):
        conv(np.ones((4, 8), np.float32))
