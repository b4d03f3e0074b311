import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from nn_testing import CONV_CASES, block_and_reference, dense_conv, make_conv, normal, rel_err
from tensorly.decomposition import partial_tucker

import jaxcpd
from jaxcpd.nn import Tucker2Conv, conv_config, count_flops, count_params


def _tucker2_kernel(core, u, v, kernel_size):
    """``G x_2 U x_3 V`` as an HWIO kernel, in NumPy (eq. 14)."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    tensor = np.einsum("pab,sa,tb->pst", core, u, v)
    return tensor.reshape(kh, kw, u.shape[0], v.shape[0])


def _random_block(seed, s, t, k, r1, r2, **kwargs):
    kh, kw = (k, k) if isinstance(k, int) else k
    core, u, v = normal(seed, (kh * kw, r1, r2)), normal(seed + 1, (s, r1)), normal(seed + 2, (t, r2))
    return Tucker2Conv.from_factors(core, u, v, kernel_size=k, **kwargs), (core, u, v)


@pytest.mark.parametrize(("k", "strides", "padding", "use_bias", "batch"), CONV_CASES[::3])
def test_equals_dense_conv_of_its_kernel(k, strides, padding, use_bias, batch):
    # Odd channel counts and an odd, non-square image (13x17).
    bias = normal(3, (7,)) if use_bias else None
    block, (core, u, v) = _random_block(0, 5, 7, k, 3, 4, strides=strides, padding=padding, bias=bias)
    np.testing.assert_allclose(block.dense_kernel(), _tucker2_kernel(core, u, v, k), rtol=1e-5, atol=1e-5)
    got, want = block_and_reference(block, normal(4, (batch, 13, 17, 5)))
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize(("kernel_size", "dilation", "padding", "strides"),
                         [((3, 5), (1, 2), 2, 2), ((5, 3), 1, "SAME_LOWER", (2, 1)), (3, 2, "SAME", 1)])
def test_rectangular_kernels_dilation_and_strides_match_nnx_conv(kernel_size, dilation, padding, strides):
    block, _ = _random_block(5, 6, 9, kernel_size, 4, 5, strides=strides, padding=padding, dilation=dilation,
                             bias=normal(8, (9,)))
    conv = make_conv(block.dense_kernel(), block.bias[...], strides=strides, padding=padding,
                     kernel_dilation=dilation)
    x = normal(9, (2, 15, 12, 6))
    y = block(x)
    assert y.shape == conv(x).shape
    assert rel_err(y, conv(x)) < 1e-5


def test_counts_by_hand():
    block = nnx.eval_shape(lambda: Tucker2Conv(64, 128, 3, (20, 30), strides=2, padding=1, rngs=nnx.Rngs(0)))
    # S R1 + D^2 R1 R2 + R2 T weights, plus the bias.
    assert block.num_params() == 64 * 20 + 9 * 20 * 30 + 30 * 128 + 128
    assert count_params(block) == block.num_params()
    # S -> R1 at the input resolution 56x56; the core and R2 -> T at the output resolution 28x28.
    assert block.flops((56, 56)) == 56 * 56 * 64 * 20 + 28 * 28 * (9 * 20 * 30 + 30 * 128)
    # count_flops traces the block: batch of 3, odd input 15x9 -> output 8x5 with padding 1 and stride 2.
    assert count_flops(block, (3, 15, 9, 64)) == 3 * (15 * 9 * 64 * 20 + 8 * 5 * (9 * 20 * 30 + 30 * 128))
    no_bias = nnx.eval_shape(lambda: Tucker2Conv(64, 128, 3, (20, 30), use_bias=False, rngs=nnx.Rngs(0)))
    assert no_bias.num_params() == 64 * 20 + 9 * 20 * 30 + 30 * 128 and no_bias.bias is None


def test_from_factors_of_tucker2_reproduces_the_conv_up_to_the_tucker_error():
    # Multilinear ranks (6, 8) plus 10% noise; jaxcpd.tucker2 at ranks (6, 8) leaves a kernel error e.
    # For i.i.d. inputs and 'VALID' padding the relative output error equals e (see test_cp_conv.py).
    core0, u0, v0 = normal(10, (9, 6, 8)), normal(11, (16, 6)), normal(12, (24, 8))
    tensor = np.einsum("pab,sa,tb->pst", core0, u0, v0)
    noise = normal(13, tensor.shape)
    tensor = (tensor + 0.1 * noise * np.linalg.norm(tensor) / np.linalg.norm(noise)).astype(np.float32)
    result = jaxcpd.tucker2(tensor, (6, 8))
    kernel = tensor.reshape(3, 3, 16, 24)
    approx = _tucker2_kernel(np.asarray(result.core), np.asarray(result.U), np.asarray(result.V), 3)
    kernel_err = np.linalg.norm(approx - kernel) / np.linalg.norm(kernel)
    assert kernel_err == pytest.approx(float(result.rel_error), rel=1e-3)
    conv = make_conv(kernel, normal(14, (24,)), padding="VALID")
    block = Tucker2Conv.from_factors(result.core, result.U, result.V, **conv_config(conv),
                                     bias=conv.bias[...])
    np.testing.assert_allclose(block.dense_kernel(), approx, rtol=1e-4, atol=1e-5)
    x = normal(15, (8, 20, 20, 16))
    want = conv(x)
    out_err = np.linalg.norm(block(x) - want) / np.linalg.norm(want - conv.bias[...])
    assert 0.05 < kernel_err < 0.15
    assert out_err == pytest.approx(kernel_err, rel=0.05)


def test_tensorly_partial_tucker_gives_the_same_block_output():
    # TensorLy's Tucker-2 at full-enough ranks of an exact multilinear-rank (4, 5) kernel: both
    # decompositions are exact, so both blocks reproduce the conv.
    core0, u0, v0 = normal(16, (9, 4, 5)), normal(17, (10, 4)), normal(18, (12, 5))
    tensor = np.einsum("pab,sa,tb->pst", core0, u0, v0).astype(np.float64)
    (core, (u, v)), _ = partial_tucker(tensor, rank=[4, 5], modes=[1, 2], init="svd", n_iter_max=50)
    ours = jaxcpd.tucker2(tensor.astype(np.float32), (4, 5))
    conv = make_conv(tensor.reshape(3, 3, 10, 12).astype(np.float32), padding=1)
    x = normal(19, (2, 9, 11, 10))
    for factors in ((core, u, v), (ours.core, ours.U, ours.V)):
        block = Tucker2Conv.from_factors(*factors, **conv_config(conv), param_dtype=np.float32)
        assert rel_err(block(x), conv(x)) < 1e-4


def test_gradients_match_the_dense_conv_of_the_tucker2_kernel():
    block, (core, u, v) = _random_block(20, 4, 3, 3, 2, 3, strides=2, bias=normal(23, (3,)))
    x = normal(24, (2, 9, 11, 4))

    @nnx.jit
    def grads(block, x):
        return nnx.grad(lambda block, x: jnp.sum(block(x) ** 2), argnums=(0, 1))(block, x)

    def reference_loss(core, u, v, x):
        kernel = jnp.einsum("pab,sa,tb->pst", core, u, v).reshape(3, 3, 4, 3)
        return jnp.sum(dense_conv(x, kernel, 2, "SAME", bias=block.bias[...]) ** 2)

    block_grads, x_grad = grads(block, x)
    g_core, g_u, g_v, g_x = jax.grad(reference_loss, argnums=(0, 1, 2, 3))(core, u, v, x)
    assert rel_err(x_grad, g_x) < 1e-5
    assert rel_err(block_grads["core"][...].reshape(9, 2, 3), g_core) < 1e-5
    assert rel_err(block_grads["in_proj"][...], g_u) < 1e-5
    assert rel_err(block_grads["out_proj"][...].T, g_v) < 1e-5


def test_unbatched_and_multi_batch_inputs():
    block, _ = _random_block(25, 4, 3, 3, 2, 2, strides=2)
    x = normal(26, (2, 3, 9, 11, 4))
    y = block(x)
    assert y.shape == (2, 3, 5, 6, 3)
    np.testing.assert_allclose(block(x[1, 2]), y[1, 2], rtol=1e-5, atol=1e-5)


def test_float64(x64):
    core, u, v = (normal(27 + i, shape, np.float64) for i, shape in enumerate([(9, 2, 3), (4, 2), (5, 3)]))
    block = Tucker2Conv.from_factors(core, u, v, kernel_size=3, padding=1)
    x = normal(30, (1, 7, 7, 4), np.float64)
    y = block(x)
    assert y.dtype == jnp.float64 and block.core[...].dtype == jnp.float64
    assert rel_err(y, dense_conv(x, block.dense_kernel(), 1, ((1, 1), (1, 1)))) < 1e-12


def test_fresh_block_runs_and_has_the_declared_shapes():
    block = Tucker2Conv(6, 8, 3, (3, 4), strides=2, rngs=nnx.Rngs(0))
    assert block.in_proj.shape == (6, 3) and block.core.shape == (3, 3, 3, 4)
    assert block.out_proj.shape == (4, 8) and block.bias.shape == (8,)
    got, want = block_and_reference(block, normal(31, (1, 9, 9, 6)))
    assert got.shape == (1, 5, 5, 8) and rel_err(got, want) < 1e-5


def _from_ones(core_shape, u_shape, v_shape, kernel_size=3, **kwargs):
    return Tucker2Conv.from_factors(np.ones(core_shape), np.ones(u_shape), np.ones(v_shape),
                                    kernel_size=kernel_size, **kwargs)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Tucker2Conv(4, 5, 3, (5, 2), rngs=nnx.Rngs(0)), r"tucker_ranks\[0\] must be <= 4, got 5"),
        (lambda: Tucker2Conv(4, 5, 3, (2, 0), rngs=nnx.Rngs(0)), r"tucker_ranks\[1\] must be >= 1, got 0"),
        (lambda: Tucker2Conv(4, 5, 3, 2, rngs=nnx.Rngs(0)), r"tucker_ranks must be a pair \(R1, R2\), got 2"),
        (lambda: Tucker2Conv(0, 5, 3, (1, 1), rngs=nnx.Rngs(0)), r"in_features must be >= 1, got 0"),
        (lambda: _from_ones((9, 2, 3), (4, 2), (5, 2)),
         r"core must have shape \(kh\*kw, R1, R2\) = \(9, 2, 2\) .* got \(9, 2, 3\)"),
        (lambda: _from_ones((9, 2, 3), (4, 2), (5, 3), kernel_size=5),
         r"core must have shape \(kh\*kw, R1, R2\) = \(25, 2, 3\)"),
        (lambda: _from_ones((9, 2, 3), (4, 2), (5, 3), bias=np.ones(4)),
         r"bias must have shape \(5,\), got \(4,\)"),
        (lambda: _from_ones((9, 2), (4, 2), (5, 3)),
         r"core must have ndim=3"),
    ],
)
def test_bad_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_input_raises():
    block, _ = _random_block(32, 4, 5, 3, 2, 2, padding="VALID")
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., H, W, C\) with C=4, got \(1, 8, 8, 3"):
        block(np.ones((1, 8, 8, 3), np.float32))
