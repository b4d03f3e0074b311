"""jaxcpd.compress on ResNet-18: lossless ranks, forward/backward, counts, no mutation, errors."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compression_testing import EXACT_RANK, INPUT_SHAPE, TinyNet, eval_logits, images, snapshot
from flax import nnx

import jaxcpd
from jaxcpd import LayerPlan
from jaxcpd.compression.surgery import planned_params
from jaxcpd.models import get_submodule, named_convs
from jaxcpd.nn import CPConv, SVDConv, SVDDense, TKDCPConv, Tucker2Conv, count_flops, count_params

BLOCK_TYPES = {"cpd": CPConv, "cpd-epc": CPConv, "tkd-cpd": TKDCPConv, "tkd-cpd-epc": TKDCPConv,
               "tucker2": Tucker2Conv}


def test_lossless_ranks_reproduce_the_logits(lossless, batch):
    # Exact CP rank-6 kernels with CP rank 6, full Tucker-2 ranks, full SVD ranks: the compressed
    # network computes the same function. Measured: max |logit difference| ~2e-6 (logits ~1).
    want = eval_logits(lossless.original, batch)
    got = eval_logits(lossless.model, batch)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(want).max() > 0.1  # the comparison is not between near-zero logits
    for row in lossless.report.layers:
        assert row.rel_error < 1e-5, row
        block = get_submodule(lossless.model, row.name)
        if row.name == "fc":
            assert isinstance(block, SVDDense) and block.rank == 10
        elif row.method == "svd":
            assert isinstance(block, SVDConv)
        else:
            assert isinstance(block, BLOCK_TYPES[row.method])
        if row.method.startswith("tkd"):
            # CP rank 6 < both Tucker ranks: merged into a CP block (section 3).
            assert block.merged == (True, True) and block.rank == EXACT_RANK


def test_lossless_kernels_are_reproduced_layer_by_layer(lossless):
    for name in lossless.plan:
        original = get_submodule(lossless.original, name).kernel[...]
        block = get_submodule(lossless.model, name)
        np.testing.assert_allclose(block.dense_kernel(), original, atol=1e-5 * float(jnp.abs(original).max()))


def test_compressed_resnet18_runs_forward_and_backward(compressed_third, batch):
    model = nnx.clone(compressed_third.model)  # training mode updates batch statistics
    labels = jnp.arange(batch.shape[0]) % 10

    def loss_fn(model, x):
        logits = model(x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    loss, grads = nnx.jit(nnx.value_and_grad(loss_fn))(model, batch)
    assert np.isfinite(float(loss))
    flat = dict(nnx.to_flat_state(grads))
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    assert flat.keys() == params.keys()
    for path, grad in flat.items():
        assert np.all(np.isfinite(grad[...])), path
    # Every factor of every block gets a non-zero gradient (all blocks lie on the path to the loss).
    paths = {id(module): path for path, module in nnx.iter_modules(model)}
    for name in compressed_third.plan:
        prefix = paths[id(get_submodule(model, name))]
        block_grads = {p[len(prefix):]: g[...] for p, g in flat.items() if p[:len(prefix)] == prefix}
        expected = {("in_proj",), ("out_proj",)}
        if isinstance(get_submodule(model, name), CPConv):
            expected.add(("depthwise",))
        if name == "fc":
            expected.add(("bias",))
        assert block_grads.keys() == expected
        for key, grad in block_grads.items():
            assert float(jnp.abs(grad).max()) > 0, (name, key)
    assert eval_logits(model, batch).shape == (batch.shape[0], 10)


def _cp_flops(h, w, ho, wo, s, t, d2, r):
    """CP block: S->R at the input resolution, depthwise D x D and R->T at the output resolution."""
    return r * (h * w * s + ho * wo * (d2 + t))


def test_flops_and_params_match_independent_counts(compressed_third):
    model, report = compressed_third.model, compressed_third.report
    # Whole model, counted on the compressed model itself.
    assert report.params_after == count_params(model)
    assert report.flops_after == count_flops(model, INPUT_SHAPE)
    assert report.params_before == count_params(compressed_third.original)
    assert report.flops_before == count_flops(compressed_third.original, INPUT_SHAPE)
    saved = sum(r.params_before - r.params_after for r in report.layers)
    assert report.params_before - report.params_after == saved
    # Per layer, by the hand formulas: feature maps are 32x32 in layer1, 32x32 -> 16x16 in layer2.0.conv1.
    by_layer = count_flops(model, INPUT_SHAPE, by_layer=True)
    hw = {"layer1": (32, 32, 32, 32), "layer2": (32, 32, 16, 16)}
    assert {r.name[:6] for r in report.layers if r.method == "cpd-epc"} == set(hw)
    for row in report.layers:
        assert row.flops_after == by_layer[row.name]
        block = get_submodule(model, row.name)
        if row.method == "cpd-epc":
            (_, _, s, t), r = row.kernel_shape, row.rank
            assert isinstance(block, CPConv) and block.rank == r
            assert row.params_after == r * (9 + s + t)  # R (D^2 + S + T); ResNet convs have no bias
            assert row.flops_after == _cp_flops(*hw[row.name[:6]], s, t, 9, r)
            assert row.params_before == 9 * s * t
        elif row.name == "fc":
            s, t = row.kernel_shape
            assert row.params_after == row.rank * (s + t) + t and row.flops_after == row.rank * (s + t)
        else:  # the stride-2 1x1 shortcut: both SVD factors run at 16x16
            _, _, s, t = row.kernel_shape
            assert row.params_after == row.rank * (s + t)
            assert row.flops_after == 16 * 16 * row.rank * (s + t)
        assert row.params_after == count_params(block)
    # The planned layers keep about a third of their weights.
    kept = sum(r.params_after for r in report.layers) / sum(r.params_before for r in report.layers)
    assert kept == pytest.approx(1 / 3, abs=0.02)


def test_every_planned_layer_is_replaced_and_the_rest_kept(compressed_third):
    model, original = compressed_third.model, compressed_third.original
    for name, module in named_convs(model):
        if name in compressed_third.plan:
            assert not isinstance(module, nnx.Conv), name
        else:
            assert isinstance(module, nnx.Conv)
            np.testing.assert_array_equal(module.kernel[...], get_submodule(original, name).kernel[...])
    assert [r.name for r in compressed_third.report.layers] == list(compressed_third.plan)
    # BatchNorm statistics are carried over untouched.
    np.testing.assert_array_equal(model.layer1[0].bn1.mean[...], original.layer1[0].bn1.mean[...])


def test_the_input_model_is_not_mutated(compressed_third, lossless):
    for case in (compressed_third, lossless):
        for got, want in zip(snapshot(case.original), case.before, strict=True):
            np.testing.assert_array_equal(got, want)
        for name in case.plan:
            assert isinstance(get_submodule(case.original, name), nnx.Conv | nnx.Linear)
    # The copy shares no variables: changing it leaves the original alone.
    model = nnx.clone(compressed_third.model)
    before = np.array(compressed_third.original.bn1.scale[...])
    model.bn1.scale.set_value(jnp.zeros_like(model.bn1.scale[...]))
    np.testing.assert_array_equal(compressed_third.original.bn1.scale[...], before)


def test_compressed_copy_does_not_share_variables_with_the_original():
    net = TinyNet(rngs=nnx.Rngs(0))
    compressed, _ = jaxcpd.compress(net, {"proj": LayerPlan("svd", rank=4)}, progress=False)
    compressed.bn.scale.set_value(jnp.zeros(12))
    compressed.conv.kernel.set_value(jnp.zeros((3, 3, 8, 12)))
    assert float(jnp.abs(net.bn.scale[...]).min()) == 1.0
    assert float(jnp.abs(net.conv.kernel[...]).max()) > 0


def test_keep_entries_and_empty_plans_change_nothing():
    net = TinyNet(rngs=nnx.Rngs(0))
    x = images(1, (2, 9, 9, 3))
    compressed, report = jaxcpd.compress(net, {"conv": LayerPlan("keep")}, progress=False)
    assert report.layers == [] and isinstance(compressed.conv, nnx.Conv)
    assert report.params_after == report.params_before == count_params(net)
    np.testing.assert_array_equal(eval_logits(compressed, x), eval_logits(net, x))


def test_plain_data_plans_are_accepted():
    net = TinyNet(rngs=nnx.Rngs(0))
    compressed, report = jaxcpd.compress(net, {"proj": {"method": "svd", "rank": 3}, "conv": "keep"},
                                         progress=False)
    assert isinstance(compressed.proj, SVDConv) and compressed.proj.rank == 3
    assert [r.name for r in report.layers] == ["proj"]


def test_conv_bias_and_geometry_are_carried_into_the_block():
    # TinyNet.conv: 3x3, stride 2, explicit padding, with bias. Full Tucker-2 ranks are exact.
    net = TinyNet(rngs=nnx.Rngs(0))
    net.conv.bias.set_value(jnp.asarray(images(2, (12,))))
    compressed, _ = jaxcpd.compress(net, {"conv": LayerPlan("tucker2", ranks=(8, 12))}, progress=False,
                                    on_growth="ignore")
    x = images(3, (2, 11, 9, 8))
    np.testing.assert_allclose(compressed.conv(x), net.conv(x), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(compressed.conv.bias[...], net.conv.bias[...])


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        ({"layer5.0.conv1": LayerPlan("cpd", rank=4)}, r"no submodule 'layer5.0.conv1': the root .* no child "
                                                       r"'layer5'; its children are: conv1, bn1, layer1"),
        ({"layer1.0.conv3": LayerPlan("cpd", rank=4)}, r"no submodule 'layer1.0.conv3'.* no child 'conv3'"),
        ({"bn1": LayerPlan("cpd", rank=4)}, r"layer 'bn1' is a BatchNorm, not an nnx.Conv or nnx.Linear"),
        ({"layer1.0": LayerPlan("cpd", rank=4)}, r"layer 'layer1.0' is a BasicBlock, not an nnx.Conv"),
        ({"layer2.0.downsample.0": LayerPlan("cpd-epc", rank=4)},
         r"layer 'layer2.0.downsample.0' is a 1x1 conv: use method 'svd', not 'cpd-epc'"),
        ({"layer1.0.conv1": LayerPlan("svd", rank=4)},
         r"layer 'layer1.0.conv1': method 'svd' is for 1x1 convs, got kernel \(3, 3\)"),
        ({"fc": LayerPlan("cpd", rank=4)}, r"layer 'fc' is a dense layer: only 'svd' applies, got 'cpd'"),
        ({"layer1.0.conv1": {"method": "cpd", "rank": 0}}, r"plan entry 'layer1.0.conv1': rank must be >= 1"),
        ([("layer1.0.conv1", LayerPlan("cpd", rank=4))], r"plan must be a dict of layer names to LayerPlan"),
    ],
)
def test_bad_plans_raise_before_decomposing(resnet18, plan, match):
    with pytest.raises(ValueError, match=match):
        jaxcpd.compress(resnet18, plan, progress=False)


def test_bad_key_raises_before_decomposing(resnet18):
    plan = {"layer1.0.conv1": LayerPlan("cpd-epc", rank=8)}
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        jaxcpd.compress(resnet18, plan, key=0, progress=False)


def test_ranks_that_increase_the_weights_warn_or_raise(resnet18):
    # CP rank 600 on a 3x3 64->64 conv: 600 (9 + 64 + 64) = 82200 weights > 36864.
    plan = {"layer1.0.conv1": LayerPlan("cpd-epc", rank=600)}
    message = r"layer 'layer1.0.conv1': the planned block has 82200 weights, more than the layer's 36864"
    with pytest.raises(ValueError, match=message + r"; lower the ranks, or pass on_growth='warn'"):
        jaxcpd.compress(resnet18, plan, progress=False, on_growth="error")
    with pytest.raises(ValueError, match=r"on_growth must be one of \('warn', 'error', 'ignore'\), got 'no'"):
        jaxcpd.compress(resnet18, plan, progress=False, on_growth="no")


def test_growth_warns_by_default_and_is_silent_when_ignored():
    net = TinyNet(rngs=nnx.Rngs(0))
    plan = {"conv": LayerPlan("cpd", rank=40)}  # 40 (9 + 8 + 12) = 1160 > 9 * 8 * 12 = 864
    fast = {"als_kwargs": {"max_iter": 3}}
    with pytest.warns(UserWarning, match=r"layer 'conv': the planned block has 1160 weights, more than the "
                                         r"layer's 864"):
        compressed, _ = jaxcpd.compress(net, plan, progress=False, **fast)
    assert isinstance(compressed.conv, CPConv) and compressed.conv.rank == 40  # warned, still built
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxcpd.compress(net, plan, progress=False, on_growth="ignore", **fast)


def test_growth_from_an_error_bound_is_checked_after_the_decomposition():
    # A 1e-6 bound on the 1x1 12->16 conv needs the full SVD rank 12: 12 (12 + 16) = 336 > 192.
    net = TinyNet(rngs=nnx.Rngs(0))
    plan = {"proj": LayerPlan("svd", error_bound=1e-6)}
    with pytest.raises(ValueError, match=r"layer 'proj': the planned block has 336 weights, more than the "
                                         r"layer's 192"):
        jaxcpd.compress(net, plan, progress=False, on_growth="error")
    compressed, report = jaxcpd.compress(net, plan, progress=False, on_growth="ignore")
    assert report.layers[0].rank == compressed.proj.rank == 12


def test_grouped_convs_are_rejected():
    net = TinyNet(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"feature_group_count must be 1, got 12"):
        jaxcpd.compress(net, {"depthwise": LayerPlan("cpd", rank=2)}, progress=False)


@pytest.mark.parametrize(
    ("entry", "shape"),
    [
        (LayerPlan("cpd", rank=7), (3, 3, 8, 12)),
        (LayerPlan("tucker2", ranks=(5, 6)), (3, 3, 8, 12)),
        (LayerPlan("tkd-cpd", rank=3, ranks=(5, 6)), (3, 3, 8, 12)),  # merged both sides
        (LayerPlan("tkd-cpd-epc", rank=9, ranks=(5, 6)), (3, 3, 8, 12)),  # five convs
        (LayerPlan("tkd-cpd", rank=6, ranks=(6, 2)), (3, 3, 8, 12)),  # R >= R1, but one side merges
        (LayerPlan("tkd-cpd", rank=40, ranks=(8, 12)), (3, 3, 8, 12)),  # full Tucker ranks, R > both
        (LayerPlan("svd", rank=5), (1, 1, 12, 16)),
    ],
)
def test_planned_params_equal_the_weights_of_the_built_block(entry, shape):
    # The growth check uses planned_params before decomposing; it must count the block that is built.
    from jaxcpd.compression.checkpoint import _placeholder_arrays  # noqa: PLC0415
    from jaxcpd.compression.surgery import build_block  # noqa: PLC0415

    conv = nnx.eval_shape(lambda: nnx.Conv(shape[2], shape[3], shape[:2], use_bias=False, rngs=nnx.Rngs(0)))
    block = build_block(conv, entry, _placeholder_arrays(entry, shape, jnp.float32), None)
    assert planned_params(entry, shape) == count_params(block)
    if entry.method == "cpd":
        assert planned_params(entry, shape) == entry.rank * (math.prod(shape[:2]) + shape[2] + shape[3])
