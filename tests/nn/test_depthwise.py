import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from nn_testing import CONV_CASES, dense_conv, make_conv, normal, rel_err

from jaxcpd.nn import depthwise_conv, resolve_depthwise_impl

CHANNELS = 6


def _grouped_reference(x, kernel, strides, padding, dilation):
    """XLA's grouped convolution, as ``nnx.Conv(C, C, feature_group_count=C)`` computes it."""
    c = x.shape[-1]
    s = (strides, strides) if isinstance(strides, int) else strides
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    return jax.lax.conv_general_dilated(x, kernel, s, padding, rhs_dilation=d, feature_group_count=c,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")


@pytest.mark.parametrize(("k", "strides", "padding", "_bias", "batch"), CONV_CASES)
def test_shift_matches_grouped_conv(k, strides, padding, _bias, batch):
    x, kernel = normal(0, (batch, 13, 17, CHANNELS)), normal(1, (k, k, 1, CHANNELS))
    got = depthwise_conv(x, kernel, strides=strides, padding=padding, impl="shift")
    want = _grouped_reference(x, kernel, strides, padding, 1)
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize(
    ("kernel_size", "strides", "padding", "dilation"),
    [((3, 3), 1, "SAME", 2), ((3, 5), (2, 1), "SAME_LOWER", (2, 3)), ((5, 3), 2, ((2, 1), (0, 3)), 2),
     ((2, 2), 3, "VALID", 1), ((3, 3), 2, 1, 3)],
)
def test_dilation_and_uneven_options_match_nnx_grouped_conv(kernel_size, strides, padding, dilation):
    x = normal(2, (2, 13, 17, CHANNELS))
    kernel = normal(3, (*kernel_size, 1, CHANNELS))
    conv = make_conv(kernel, strides=strides, padding=padding, kernel_dilation=dilation,
                     feature_group_count=CHANNELS)
    got = depthwise_conv(x, kernel, strides=strides, padding=padding, dilation=dilation, impl="shift")
    assert rel_err(got, conv(x)) < 1e-5


@pytest.mark.parametrize(
    ("k", "strides", "padding", "dilation"),
    [(3, 1, "SAME", 1), (3, 2, ((1, 1), (1, 1)), 1), (5, 2, "VALID", 2), (7, 2, ((3, 3), (3, 3)), 1)],
)
def test_gradients_match_grouped_conv(k, strides, padding, dilation):
    x, kernel = normal(3, (3, 13, 17, CHANNELS)), normal(4, (k, k, 1, CHANNELS))

    def vjp(impl):
        def f(x, kernel):
            return depthwise_conv(x, kernel, strides=strides, padding=padding, dilation=dilation, impl=impl)

        y, pullback = jax.vjp(f, x, kernel)
        return pullback(normal(5, y.shape))

    for got, want in zip(vjp("shift"), vjp("xla"), strict=True):
        assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize(("strides", "padding", "dilation"), [(1, "SAME", 1), (2, ((1, 2), (0, 1)), 2)])
def test_shift_gradients_by_finite_differences(x64, strides, padding, dilation):
    x, kernel = normal(6, (2, 7, 9, 3), np.float64), normal(7, (3, 3, 1, 3), np.float64)

    def f(x, kernel):
        return depthwise_conv(x, kernel, strides=strides, padding=padding, dilation=dilation, impl="shift")

    check_grads(f, (x, kernel), order=1, modes=("fwd", "rev"))


def test_jit_and_batch_dims():
    x, kernel = normal(8, (2, 3, 9, 11, CHANNELS)), normal(9, (3, 3, 1, CHANNELS))
    f = jax.jit(lambda x, k: depthwise_conv(x, k, strides=2, impl="shift"))
    got = f(x, kernel)
    assert got.shape == (2, 3, 5, 6, CHANNELS)
    want = _grouped_reference(x.reshape(6, 9, 11, CHANNELS), kernel, 2, "SAME", 1)
    assert rel_err(got.reshape(want.shape), want) < 1e-5
    unbatched = depthwise_conv(x[0, 0], kernel, strides=2, impl="shift")
    np.testing.assert_allclose(unbatched, got[0, 0], rtol=1e-6, atol=1e-6)


def test_auto_picks_shift_on_cpu_and_xla_elsewhere(monkeypatch):
    assert resolve_depthwise_impl("shift") == "shift"
    assert resolve_depthwise_impl("xla") == "xla"
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert resolve_depthwise_impl("auto") == "shift"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_depthwise_impl() == "xla"


def test_float64_stays_float64(x64):
    x, kernel = normal(10, (1, 5, 5, 2), np.float64), normal(11, (3, 3, 1, 2), np.float64)
    got = depthwise_conv(x, kernel, impl="shift")
    assert got.dtype == jnp.float64
    assert rel_err(got, _grouped_reference(x, kernel, 1, "SAME", 1)) < 1e-12


@pytest.mark.parametrize("impl", ["shift", "xla"])
@pytest.mark.parametrize(("strides", "padding"), [(1, "SAME"), (2, ((3, 3), (3, 3)))])
def test_equals_dense_conv_with_diagonal_kernel(impl, strides, padding):
    x, kernel = normal(12, (3, 13, 17, 3)), normal(13, (5, 5, 1, 3))
    dense = kernel[:, :, 0, :, None] * jnp.eye(3)[None, None]
    got = depthwise_conv(x, kernel, strides=strides, padding=padding, impl=impl)
    assert rel_err(got, dense_conv(x, dense, strides, padding)) < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel": np.ones((3, 3, 1, 5))}, r"kernel must have shape \(kh, kw, 1, 6\).*\(3, 3, 1, 5\)"),
        ({"kernel": np.ones((3, 3, 6))}, r"kernel must have shape"),
        ({"x": np.ones((9, 6))}, r"x must have shape \(\.\.\., H, W, C\), got \(9, 6\)"),
        ({"impl": "cuda"}, r"depthwise_impl must be one of .* got 'cuda'"),
        ({"strides": 0}, r"strides must be >= 1, got 0"),
        ({"dilation": (1, -2)}, r"dilation\[1\] must be >= 1, got -2"),
        ({"padding": "CIRCULAR"}, r"padding must be one of"),
        ({"padding": ((1, -1), (0, 0))}, r"padding\[0\] must be an int >= 0, got -1"),
        ({"padding": "VALID", "x": np.ones((1, 2, 9, 6))}, r"smaller than the dilated kernel \(3, 3\)"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"x": np.ones((1, 9, 9, CHANNELS)), "kernel": np.ones((3, 3, 1, CHANNELS))} | kwargs
    x, kernel = args.pop("x"), args.pop("kernel")
    with pytest.raises(ValueError, match=match):
        depthwise_conv(x, kernel, **args)
