"""Plan builders: default layer choice, uniform ratio, FLOP target (checked by count_flops), EVBMF ranks."""

import math

import numpy as np
import pytest
from compression_testing import TinyNet, normal, tucker_kernel
from flax import nnx

import jaxcpd
from jaxcpd import LayerPlan
from jaxcpd.compression import apply_structure, candidate_layers
from jaxcpd.models import get_submodule, named_convs, resnet18, resnet50
from jaxcpd.nn import count_flops, count_params

CP_METHODS = ("cpd", "cpd-epc", "tkd-cpd", "tkd-cpd-epc", "tucker2")


@pytest.fixture(scope="module")
def abstract_resnet18():
    """Shapes only (builders read kernel shapes; counting traces abstractly)."""
    return nnx.eval_shape(lambda: resnet18(num_classes=10, small_input=True, rngs=nnx.Rngs(0)))


def _structured(build, plan):
    """The model ``build()`` with the plan's blocks in place (placeholder weights, abstract)."""
    return nnx.eval_shape(lambda: apply_structure(build(), plan))


def test_candidate_layers_follow_the_default_rules(abstract_resnet18):
    convs = [name for name, _ in named_convs(abstract_resnet18)]
    names = [name for name, _ in candidate_layers(abstract_resnet18)]
    assert names == convs[1:]  # every conv but the stem, 1x1 shortcuts included; no fc
    assert "layer2.0.downsample.0" in names
    keep_1x1 = [name for name, _ in candidate_layers(abstract_resnet18, one_by_one="keep")]
    assert keep_1x1 == [n for n in convs[1:] if "downsample" not in n]
    everything = [n for n, _ in candidate_layers(abstract_resnet18, include_first=True, include_fc=True)]
    assert everything == [*convs, "fc"]
    with pytest.raises(ValueError, match=r"one_by_one must be one of \('svd', 'keep'\), got 'cpd'"):
        candidate_layers(abstract_resnet18, one_by_one="cpd")


def test_grouped_convs_are_never_candidates():
    net = nnx.eval_shape(lambda: TinyNet(rngs=nnx.Rngs(0)))
    assert [n for n, _ in candidate_layers(net, include_first=True, include_fc=True)] == [
        "stem", "conv", "proj", "fc"]


@pytest.mark.parametrize("method", CP_METHODS)
@pytest.mark.parametrize("ratio", [1 / 3, 1 / 8])
def test_plan_uniform_blocks_keep_the_ratio_of_each_layers_weights(abstract_resnet18, method, ratio):
    plan = jaxcpd.plan_uniform(abstract_resnet18, method, rank_ratio=ratio, include_fc=True)
    assert list(plan) == [name for name, _ in candidate_layers(abstract_resnet18, include_fc=True)]
    model = _structured(lambda: resnet18(num_classes=10, small_input=True, rngs=nnx.Rngs(0)), plan)
    for name, entry in plan.items():
        dense = get_submodule(abstract_resnet18, name)
        *spatial, s, t = dense.kernel.shape
        weights = count_params(get_submodule(model, name)) - (t if name == "fc" else 0)
        if math.prod(spatial) == 1:
            assert entry.method == "svd"
            tolerance = (s + t) / 2  # one rank step
        else:
            assert entry.method == method
            # Half a rank step: D^2 + S + T weights for CP, S + T + D^2 (R1 + R2 + 1) for Tucker-2.
            if method.startswith("cpd"):
                tolerance = (9 + s + t) / 2
            elif method == "tucker2":
                tolerance = (s + t + 9 * (sum(entry.ranks) + 1)) / 2
            else:
                tolerance = 0.02 * ratio * dense.kernel.size
        assert abs(weights - ratio * dense.kernel.size) <= tolerance, (name, entry, weights)


def test_plan_uniform_cp_ranks_by_hand(abstract_resnet18):
    plan = jaxcpd.plan_uniform(abstract_resnet18, "cpd-epc", rank_ratio=1 / 3)
    # 3x3 64->64: R (9 + 64 + 64) ~ 36864 / 3 -> R = 90; 1x1 64->128: R (64 + 128) ~ 8192 / 3 -> 14.
    assert plan["layer1.0.conv1"] == LayerPlan("cpd-epc", rank=90)
    assert plan["layer2.0.downsample.0"] == LayerPlan("svd", rank=14)
    assert plan["layer4.1.conv2"] == LayerPlan("cpd-epc", rank=round(9 * 512 * 512 / 3 / (9 + 1024)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "svd"},
         r"method must be one of \('cpd', 'cpd-epc', 'tkd-cpd-epc', 'tkd-cpd', 'tucker2'\), got 'svd'"),
        ({"method": "keep"}, r"method must be one of"),
        ({"method": "cpd", "rank_ratio": 0}, r"rank_ratio must be in \(0, 1\), got 0.0"),
        ({"method": "cpd", "rank_ratio": 1.0}, r"rank_ratio must be in \(0, 1\), got 1.0"),
        ({"method": "cpd", "one_by_one": "cpd"}, r"one_by_one must be one of"),
    ],
)
def test_plan_uniform_bad_arguments(abstract_resnet18, kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxcpd.plan_uniform(abstract_resnet18, **kwargs)


@pytest.mark.parametrize(("method", "target"),
                         [("cpd-epc", 3.0), ("tucker2", 3.0), ("tkd-cpd-epc", 3.0), ("tkd-cpd", 5.0)])
def test_plan_for_flops_reaches_the_target_counted_on_the_built_model(abstract_resnet18, method, target):
    plan = jaxcpd.plan_for_flops(abstract_resnet18, (1, 32, 32, 3), target, method)
    model = _structured(lambda: resnet18(num_classes=10, small_input=True, rngs=nnx.Rngs(0)), plan)
    reduction = count_flops(abstract_resnet18, (1, 32, 32, 3)) / count_flops(model, (1, 32, 32, 3))
    assert target <= reduction < 1.03 * target, reduction


def test_plan_for_flops_on_resnet50_at_imagenet_size():
    build = lambda: resnet50(rngs=nnx.Rngs(0))  # noqa: E731
    base = nnx.eval_shape(build)
    plan = jaxcpd.plan_for_flops(base, None, 3.0, "cpd-epc")  # default input: 224x224 for ImageNet ports
    assert plan == jaxcpd.plan_for_flops(base, (1, 224, 224, 3), 3.0, "cpd-epc")
    # 1x1 convs (most of ResNet-50) get SVD, the 3x3 convs CP blocks.
    assert {e.method for n, e in plan.items() if n.endswith("conv2")} == {"cpd-epc"}
    assert {e.method for n, e in plan.items() if n.endswith(("conv1", "conv3"))} == {"svd"}
    reduction = count_flops(base, (1, 224, 224, 3)) / count_flops(_structured(build, plan), (1, 224, 224, 3))
    assert 3.0 <= reduction < 3.09, reduction


def test_plan_for_flops_default_input_of_small_input_ports(abstract_resnet18):
    default = jaxcpd.plan_for_flops(abstract_resnet18)
    assert default == jaxcpd.plan_for_flops(abstract_resnet18, (1, 32, 32, 3))


def test_plan_for_flops_bad_targets(abstract_resnet18):
    with pytest.raises(ValueError, match=r"target_reduction must be > 1, got 1.0"):
        jaxcpd.plan_for_flops(abstract_resnet18, None, 1.0)
    # The kept stem and fc alone cost more than 1/1000 of the model.
    message = (r"target_reduction 1000.0 is unreachable: the layers outside the plan alone cost 1,774,592 "
               r"of 555,422,720 multiply-adds")
    with pytest.raises(ValueError, match=message):
        jaxcpd.plan_for_flops(abstract_resnet18, None, 1000.0)
    with pytest.raises(ValueError, match=r"method must be one of"):
        jaxcpd.plan_for_flops(abstract_resnet18, None, 3.0, "svd")


@pytest.fixture(scope="module")
def low_rank_net():
    """TinyNet (32, 48, 64) whose conv has multilinear ranks (5, 7) and whose 1x1 conv rank 6, +1% noise."""
    net = TinyNet((32, 48, 64), rngs=nnx.Rngs(0))
    net.conv.kernel.set_value(tucker_kernel((3, 3, 32, 48), (5, 7), 0, noise=0.01))
    proj = normal(5, (48, 6)) @ normal(6, (6, 64))
    proj += 0.01 * normal(7, proj.shape) * np.linalg.norm(proj) / np.sqrt(proj.size)
    net.proj.kernel.set_value(proj.reshape(1, 1, 48, 64).astype(np.float32))
    net.fc.kernel.set_value((normal(8, (64, 3)) @ normal(9, (3, 10))).astype(np.float32))
    return net


@pytest.mark.parametrize(
    ("method", "conv_entry"),
    [
        ("tkd-cpd-epc", LayerPlan("tkd-cpd-epc", rank=7, ranks=(5, 7))),  # CP rank >= every multilinear rank
        ("tkd-cpd", LayerPlan("tkd-cpd", rank=7, ranks=(5, 7))),
        ("tucker2", LayerPlan("tucker2", ranks=(5, 7))),
        ("cpd-epc", LayerPlan("cpd-epc", rank=7)),
    ],
)
def test_plan_from_vbmf_recovers_the_ranks_of_low_rank_kernels(low_rank_net, method, conv_entry):
    plan = jaxcpd.plan_from_vbmf(low_rank_net, method, include_fc=True)
    assert plan == {"conv": conv_entry, "proj": LayerPlan("svd", rank=6), "fc": LayerPlan("svd", rank=3)}


def test_plan_from_vbmf_rank_scale_and_pure_noise(low_rank_net):
    plan = jaxcpd.plan_from_vbmf(low_rank_net, "tkd-cpd-epc", rank_scale=2.0)
    assert plan == {"conv": LayerPlan("tkd-cpd-epc", rank=14, ranks=(10, 14)),
                    "proj": LayerPlan("svd", rank=12)}
    # Full-rank noise kernels: EVBMF finds no component above the noise; ranks are clamped to >= 1.
    noise = TinyNet((32, 48, 64), rngs=nnx.Rngs(1))
    for name in ("conv", "proj"):
        conv = get_submodule(noise, name)
        conv.kernel.set_value(normal(11, conv.kernel.shape).astype(np.float32))
    plan = jaxcpd.plan_from_vbmf(noise, "tucker2")
    assert plan == {"conv": LayerPlan("tucker2", ranks=(1, 1)), "proj": LayerPlan("svd", rank=1)}


def test_plan_from_vbmf_bad_arguments(low_rank_net):
    with pytest.raises(ValueError, match=r"rank_scale must be > 0, got 0.0"):
        jaxcpd.plan_from_vbmf(low_rank_net, rank_scale=0)
    with pytest.raises(ValueError, match=r"method must be one of"):
        jaxcpd.plan_from_vbmf(low_rank_net, "svd")
