import numpy as np
import pytest
from flax import nnx
from nn_testing import CONV_CASES, block_and_reference, make_conv, normal, rel_err
from tensorly.decomposition import parafac, partial_tucker

from jaxcpd.nn import TKDCPConv, conv_config, merge_plan


def _tkd_cp_kernel(u, v, factors, kernel_size):
    """The TKD-CPD model ``[[A, B, C]] x_2 U x_3 V`` as an HWIO kernel, in NumPy."""
    a, b, c = factors
    tensor = np.einsum("pr,sa,ar,tb,br->pst", a, u, b, v, c)
    return tensor.reshape(kernel_size, kernel_size, u.shape[0], v.shape[0])


def _factors(seed, s, t, k, rank, r1, r2):
    u, v = normal(seed, (s, r1)), normal(seed + 1, (t, r2))
    return u, v, (normal(seed + 2, (k * k, rank)), normal(seed + 3, (r1, rank)), normal(seed + 4, (r2, rank)))


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize(("k", "strides", "padding", "use_bias", "batch"), CONV_CASES[::3])
def test_equals_dense_conv_of_the_tkd_cp_kernel(k, strides, padding, use_bias, batch, merge):
    u, v, factors = _factors(0, 6, 7, k, 5, 3, 4)
    bias = normal(5, (7,)) if use_bias else None
    block = TKDCPConv.from_factors(u, v, factors, kernel_size=k, strides=strides, padding=padding, bias=bias,
                                   merge=merge)
    assert block.merged == (merge, merge)
    np.testing.assert_allclose(block.dense_kernel(), _tkd_cp_kernel(u, v, factors, k), rtol=1e-5, atol=1e-5)
    got, want = block_and_reference(block, normal(6, (batch, 13, 17, 6)))
    assert got.shape == want.shape
    assert rel_err(got, want) < 1e-5


def test_merges_when_the_cp_rank_is_below_both_tucker_ranks():
    # Section 3: R < R1 and R < R2 -> both pairs of 1x1 convs merge, leaving a CP block.
    u, v, factors = _factors(7, 16, 24, 3, 4, 8, 10)
    block = TKDCPConv.from_factors(u, v, factors, kernel_size=3, padding=1, dilation=2)
    assert block.merged == (True, True)
    assert block.tucker_in is None and block.tucker_out is None
    assert block.in_proj.shape == (16, 4) and block.out_proj.shape == (4, 24)
    assert block.num_params() == 4 * (9 + 16 + 24)
    conv = make_conv(_tkd_cp_kernel(u, v, factors, 3), padding=1, kernel_dilation=2)
    x = normal(8, (2, 11, 13, 16))
    assert rel_err(block(x), conv(x)) < 1e-5


def test_keeps_five_convs_when_the_cp_rank_exceeds_the_tucker_ranks():
    block = nnx.eval_shape(lambda: TKDCPConv(64, 64, 3, 100, (16, 20), rngs=nnx.Rngs(0)))
    assert block.merged == (False, False)
    assert [p.shape for p in (block.tucker_in, block.in_proj, block.depthwise, block.out_proj,
                              block.tucker_out)] == [(64, 16), (16, 100), (3, 3, 1, 100), (100, 20), (20, 64)]
    # Fig. 3c: S R1 + R1 R + D^2 R + R R2 + R2 T weights, plus the bias.
    params = 64 * 16 + 16 * 100 + 9 * 100 + 100 * 20 + 20 * 64
    assert block.num_params() == params + 64
    assert block.flops((14, 14)) == 14 * 14 * params
    assert block.flops((14, 14)) < 14 * 14 * 100 * (64 + 9 + 64)  # cheaper than the CP block of rank R


@pytest.mark.parametrize(
    ("sizes", "merge", "expected"),
    [
        ((64, 64, 10, (16, 20)), None, (True, True)),
        ((64, 64, 100, (16, 20)), None, (False, False)),
        # R >= R1, but one 64x40 conv (2560) is cheaper than 64x32 + 32x40 (3328): merge that side only.
        ((64, 256, 40, (32, 30)), None, (True, False)),
        ((64, 64, 10, (16, 20)), False, (False, False)),
        ((64, 64, 100, (16, 20)), True, (True, True)),
    ],
)
def test_merge_plan(sizes, merge, expected):
    assert merge_plan(*sizes, merge) == expected


def test_forced_unmerged_fresh_block_has_all_five_convs():
    block = nnx.eval_shape(lambda: TKDCPConv(48, 32, 3, 10, (24, 16), merge=False, rngs=nnx.Rngs(0)))
    assert block.merged == (False, False)
    assert block.tucker_in.shape == (48, 24) and block.in_proj.shape == (24, 10)
    assert block.out_proj.shape == (10, 16) and block.tucker_out.shape == (16, 32)


def test_from_factors_of_a_tucker2_cp_model_reproduces_the_conv_up_to_its_error():
    # TensorLy's Tucker-2 (partial_tucker) of the kernel, then its CPD of the core. The kernel
    # error e gives an output error ~e on i.i.d. inputs with 'VALID' padding (see test_cp_conv.py).
    # Multilinear ranks (8, 8) and a core of CP rank 12 > 8, plus 5% noise: the five-conv regime.
    u0, v0, factors0 = _factors(9, 32, 40, 3, 12, 8, 8)
    tensor = _tkd_cp_kernel(u0, v0, factors0, 3).reshape(9, 32, 40).astype(np.float64)
    tensor += 0.05 * normal(14, tensor.shape) * np.linalg.norm(tensor) / np.sqrt(tensor.size)
    (core, (u, v)), _ = partial_tucker(tensor, rank=[8, 8], modes=[1, 2], init="svd", n_iter_max=50)
    cp = parafac(core, 12, init="random", random_state=0, n_iter_max=500, tol=1e-10)
    factors = (cp.factors[0] * cp.weights, cp.factors[1], cp.factors[2])
    approx = _tkd_cp_kernel(u, v, factors, 3)
    kernel = tensor.reshape(3, 3, 32, 40)
    kernel_err = np.linalg.norm(approx - kernel) / np.linalg.norm(kernel)
    conv = make_conv(kernel.astype(np.float32), padding="VALID")
    block = TKDCPConv.from_factors(u, v, factors, **conv_config(conv), param_dtype=np.float32)
    assert block.merged == (False, False)
    x = normal(13, (8, 16, 16, 32))
    assert 0.02 < kernel_err < 0.2
    assert rel_err(block(x), conv(x)) == pytest.approx(kernel_err, rel=0.05)


def _fresh(rank, tucker_ranks, **kwargs):
    return TKDCPConv(8, 8, 3, rank, tucker_ranks, rngs=nnx.Rngs(0), **kwargs)


def _from_ones(u_shape, v_shape, factor_rows, kernel_size=3):
    factors = tuple(np.ones((n, 5)) for n in factor_rows)
    return TKDCPConv.from_factors(np.ones(u_shape), np.ones(v_shape), factors, kernel_size=kernel_size)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: _fresh(4, (9, 4)), r"tucker_ranks\[0\] \(R1\) must be <= 8, got 9"),
        (lambda: _fresh(4, (4, 0)), r"tucker_ranks\[1\] \(R2\) must be >= 1, got 0"),
        (lambda: _fresh(4, 4), r"tucker_ranks must be a pair \(R1, R2\), got 4"),
        (lambda: _fresh(0, (4, 4)), r"rank must be >= 1, got 0"),
        (lambda: _fresh(4, (4, 4), merge="yes"), r"merge must be None, True or False, got 'yes'"),
        (lambda: _from_ones((8, 4), (6, 3), (9, 3, 3)),
         r"cp_factors B \(3, 5\) and C \(3, 5\) must have R1=4 and R2=3 rows to match U \(8, 4\) and V"),
        (lambda: _from_ones((8, 4), (6, 3), (9, 4, 3), kernel_size=(1, 3)),
         r"cp_factors\[0\] \(A\) has 9 rows, kernel_size \(1, 3\) needs 3"),
        (lambda: _from_ones((8,), (6, 3), (9, 4, 3)), r"U must have ndim=2, got shape \(8,\)"),
    ],
)
def test_bad_arguments_raise(build, match):
    """ValueErrors name the argument and the offending sizes."""
    with pytest.raises(ValueError, match=match):
        build()
