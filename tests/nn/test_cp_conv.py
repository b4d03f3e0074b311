import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from nn_testing import CONV_CASES, block_and_reference, dense_conv, make_conv, normal, rel_err
from tensorly.decomposition import parafac

import jaxcpd
from jaxcpd.nn import CPConv, _separable, conv_config


def _random_block(seed, s, t, k, rank, **kwargs):
    a, b, c = normal(seed, (k * k, rank)), normal(seed + 1, (s, rank)), normal(seed + 2, (t, rank))
    return CPConv.from_factors((a, b, c), kernel_size=k, **kwargs)


@pytest.mark.parametrize(("k", "strides", "padding", "use_bias", "batch"), CONV_CASES)
def test_equals_dense_conv_of_its_kernel(k, strides, padding, use_bias, batch):
    bias = normal(3, (6,)) if use_bias else None
    block = _random_block(0, 5, 6, k, 4, strides=strides, padding=padding, bias=bias)
    got, want = block_and_reference(block, normal(4, (batch, 13, 17, 5)))
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("impl", ["shift", "xla"])
@pytest.mark.parametrize(("kernel_size", "dilation", "padding"),
                         [((3, 3), 2, "SAME"), ((3, 5), (1, 2), 2), ((5, 3), 1, "SAME_LOWER")])
def test_dilation_and_rectangular_kernels_match_nnx_conv(impl, kernel_size, dilation, padding):
    kh, kw = kernel_size
    factors = (normal(5, (kh * kw, 3)), normal(6, (5, 3)), normal(7, (7, 3)))
    options = {"strides": 2, "padding": padding}
    block = CPConv.from_factors(factors, kernel_size=kernel_size, dilation=dilation, bias=normal(8, (7,)),
                                depthwise_impl=impl, **options)
    conv = make_conv(block.dense_kernel(), block.bias[...], kernel_dilation=dilation, **options)
    x = normal(6, (2, 13, 17, 5))
    assert rel_err(block(x), conv(x)) < 1e-5


def test_from_factors_of_a_cpd_reproduces_the_conv_up_to_the_decomposition_error():
    # A kernel with a rank-8 structure plus 20% noise; TensorLy's rank-8 CPD leaves a kernel error e.
    # For i.i.d. inputs and 'VALID' padding E|conv(x, dK)|^2 / E|conv(x, K)|^2 = |dK|^2 / |K|^2,
    # so the relative output error must match e.
    lowrank = np.einsum("pr,sr,tr->pst", normal(7, (9, 8)), normal(8, (16, 8)), normal(9, (24, 8)))
    noise = normal(10, lowrank.shape)
    tensor = (lowrank + 0.2 * noise * np.linalg.norm(lowrank) / np.linalg.norm(noise)).astype(np.float64)
    cp = parafac(tensor, 8, init="svd", n_iter_max=500, tol=1e-10)
    factors = (cp.factors[0] * cp.weights, cp.factors[1], cp.factors[2])
    kernel = tensor.reshape(3, 3, 16, 24)
    kernel_err = np.linalg.norm(np.einsum("pr,sr,tr->pst", *factors) - tensor) / np.linalg.norm(tensor)
    conv = make_conv(kernel.astype(np.float32), normal(11, (24,)), padding="VALID")
    block = CPConv.from_factors(factors, **conv_config(conv), bias=conv.bias[...], param_dtype=np.float32)
    x = normal(12, (8, 20, 20, 16))
    want = conv(x)
    out_err = np.linalg.norm(block(x) - want) / np.linalg.norm(want - conv.bias[...])
    assert 0.1 < kernel_err < 0.3
    assert out_err == pytest.approx(kernel_err, rel=0.05)


def test_from_factors_accepts_cp_als_results():
    tensor = np.einsum("pr,sr,tr->pst", normal(27, (9, 3)), normal(28, (4, 3)), normal(29, (5, 3)))
    result = jaxcpd.cp_als(tensor, 3)
    block = CPConv.from_factors(result.factors, kernel_size=3)
    want = jaxcpd.tensor_to_kernel(jaxcpd.cp_reconstruct(result.factors), 3)
    np.testing.assert_allclose(block.dense_kernel(), want, rtol=1e-5, atol=1e-6)


def test_factors_round_trip():
    a, b, c = normal(13, (9, 4)), normal(14, (5, 4)), normal(15, (6, 4))
    block = CPConv.from_factors((a, b, c), kernel_size=3)
    for got, want in zip(block.factors(), (a, b, c), strict=True):
        np.testing.assert_array_equal(got, want)
    assert block.in_proj.shape == (5, 4) and block.depthwise.shape == (3, 3, 1, 4)
    assert block.out_proj.shape == (4, 6) and block.bias is None


def test_fresh_init_matches_lecun_variance_of_the_dense_kernel():
    # Per-factor LeCun normal gives Var(K) = R * 1/S * 1/D^2 * 1/R = 1/(D^2 S), like nnx.Conv.
    var = np.mean([np.var(CPConv(32, 48, 3, 40, rngs=nnx.Rngs(seed)).dense_kernel()) for seed in range(4)])
    assert var == pytest.approx(1 / (9 * 32), rel=0.15)
    block = CPConv(32, 48, 3, 40, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(block.bias[...], np.zeros(48))


def test_gradients_match_the_dense_conv_of_the_cp_kernel():
    factors = (normal(16, (9, 5)), normal(17, (4, 5)), normal(18, (3, 5)))
    bias = normal(19, (3,))
    block = CPConv.from_factors(factors, kernel_size=3, strides=2, bias=bias)
    x = normal(20, (2, 9, 11, 4))

    def reference_loss(factors, x):
        kernel = jaxcpd.tensor_to_kernel(jaxcpd.cp_reconstruct(factors), 3)
        return jnp.sum(dense_conv(x, kernel, 2, "SAME", bias=bias) ** 2)

    @nnx.jit
    def grads(block, x):
        return nnx.grad(lambda block, x: jnp.sum(block(x) ** 2), argnums=(0, 1))(block, x)

    block_grads, x_grad = grads(block, x)
    (a_grad, b_grad, c_grad), x_grad_ref = jax.jit(jax.grad(reference_loss, argnums=(0, 1)))(factors, x)
    assert rel_err(x_grad, x_grad_ref) < 1e-5
    assert rel_err(block_grads["depthwise"][...].reshape(9, 5), a_grad) < 1e-5
    assert rel_err(block_grads["in_proj"][...], b_grad) < 1e-5
    assert rel_err(block_grads["out_proj"][...].T, c_grad) < 1e-5


def test_unbatched_and_multi_batch_inputs():
    block = _random_block(21, 4, 3, 3, 2, strides=2)
    x = normal(22, (2, 3, 9, 11, 4))
    y = block(x)
    assert y.shape == (2, 3, 5, 6, 3)
    np.testing.assert_allclose(block(x[1, 2]), y[1, 2], rtol=1e-5, atol=1e-5)


def test_float64(x64):
    factors = tuple(normal(30 + i, shape, np.float64) for i, shape in enumerate([(9, 3), (4, 3), (5, 3)]))
    block = CPConv.from_factors(factors, kernel_size=3, padding=1)
    x = normal(24, (1, 7, 7, 4), np.float64)
    y = block(x)
    assert y.dtype == jnp.float64 and block.in_proj[...].dtype == jnp.float64
    assert rel_err(y, dense_conv(x, block.dense_kernel(), 1, ((1, 1), (1, 1)))) < 1e-12


def test_counts():
    block = nnx.eval_shape(lambda: CPConv(64, 128, 3, 50, strides=2, padding=1, rngs=nnx.Rngs(0)))
    assert block.num_params() == 50 * (9 + 64 + 128) + 128
    # 56x56 input, 28x28 output: S->R at 56x56, depthwise and R->T at 28x28.
    assert block.flops((56, 56)) == 56 * 56 * 64 * 50 + 28 * 28 * 50 * (9 + 128)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: CPConv(4, 5, 3, 0, rngs=nnx.Rngs(0)), r"rank must be >= 1, got 0"),
        (lambda: CPConv(4, 5, 3, -2, rngs=nnx.Rngs(0)), r"rank must be >= 1, got -2"),
        (lambda: CPConv(4, 5, 3, 2.5, rngs=nnx.Rngs(0)), r"rank must be a positive int, got 2.5"),
        (lambda: CPConv(0, 5, 3, 2, rngs=nnx.Rngs(0)), r"in_features must be >= 1, got 0"),
        (lambda: CPConv(4, 5, (3, 0), 2, rngs=nnx.Rngs(0)), r"kernel_size\[1\] must be >= 1, got 0"),
        (lambda: CPConv(4, 5, 3, 2, padding="REFLECT", rngs=nnx.Rngs(0)), r"padding must be one of"),
        (lambda: CPConv(4, 5, 3, 2, depthwise_impl="fast", rngs=nnx.Rngs(0)), r"depthwise_impl must be"),
        (lambda: CPConv.from_factors((np.ones((9, 2)), np.ones((4, 3)), np.ones((5, 2))), kernel_size=3),
         r"factors must share one number of columns \(rank\), got shapes \[\(9, 2\), \(4, 3\), \(5, 2\)\]"),
        (lambda: CPConv.from_factors((np.ones((9, 2)), np.ones((4, 2)), np.ones((5, 2))), kernel_size=5),
         r"factors\[0\] \(A\) has 9 rows, kernel_size \(5, 5\) needs 25"),
        (lambda: CPConv.from_factors((np.ones((9, 2)), np.ones((4, 2))), kernel_size=3),
         r"factors must be a tuple \(A, B, C\) of 3 matrices, got 2"),
        (lambda: CPConv.from_factors((np.ones((9, 2)), np.ones((4, 2)), np.ones((5, 2))), kernel_size=3,
                                     bias=np.ones(4)), r"bias must have shape \(5,\), got \(4,\)"),
        (lambda: CPConv.from_factors((np.ones((9, 2)), np.ones((4, 2)), np.full((5, 2), np.nan)),
                                     kernel_size=3), r"factors\[2\] contains NaN or Inf"),
    ],
)
def test_bad_arguments_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_input_raises():
    block = _random_block(23, 4, 5, 3, 2, padding="VALID")
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., H, W, C\) with C=4, got \(1, 8, 8, 3"):
        block(np.ones((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"input of spatial size \(2, 8\) .* smaller than the dilated"):
        block(np.ones((1, 2, 8, 4), np.float32))
    with pytest.raises(ValueError, match=r"input_hw\[0\] must be >= 1, got 0"):
        block.flops((0, 4))


def test_grouped_conv_is_rejected_by_conv_config():
    conv = nnx.eval_shape(lambda: nnx.Conv(8, 8, (3, 3), feature_group_count=4, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"feature_group_count must be 1, got 4 \(grouped conv 8->8\)"):
        conv_config(conv)


def test_jax_jit_of_split_block_matches_eager():
    block = _random_block(25, 3, 4, 3, 2, strides=2, padding="SAME")
    graphdef, state = nnx.split(block)
    x = normal(26, (1, 10, 10, 3))
    jitted = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    np.testing.assert_allclose(jitted(state, x), block(x), rtol=1e-6, atol=1e-6)


def test_cpu_batch_chunking_matches_the_reference_in_values_and_gradients(monkeypatch):
    factors = (normal(32, (9, 6)), normal(33, (5, 6)), normal(34, (4, 6)))
    block = CPConv.from_factors(factors, kernel_size=3, strides=2, padding=1, bias=normal(35, (4,)))
    x = normal(36, (2, 3, 9, 11, 5))

    @nnx.jit
    def loss_and_grads(block, x):
        return nnx.value_and_grad(lambda block, x: jnp.sum(jnp.sin(block(x))), argnums=(0, 1))(block, x)

    whole = loss_and_grads(block, x)
    monkeypatch.setattr(_separable, "CPU_CHUNK_BYTES", 1)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert block._cpu_chunk((9, 11), jnp.float32) == 1  # six images, one per lax.map step
    chunked = jax.jit(lambda state, x: loss_and_grads(nnx.merge(nnx.graphdef(block), state), x))(
        nnx.state(block), x)
    for got, want in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole), strict=True):
        assert rel_err(got, want) < 1e-5
    got, want = block_and_reference(block, x.reshape(6, 9, 11, 5))
    assert rel_err(got, want) < 1e-5
