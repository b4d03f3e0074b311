import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcpd.nn import CPConv, SVDConv, SVDDense, TKDCPConv, count_flops, count_params, layer_flops

# ResNet-18 at 224x224: 1,814,073,344 multiply-adds in its convs and fc (torch's FlopCounterMode
# reports twice that in FLOPs) and 11,689,512 parameters (torchvision.models.resnet18).
RESNET18_MACS = 1_814_073_344
RESNET18_PARAMS = 11_689_512


class BasicBlock(nnx.Module):
    def __init__(self, cin, cout, stride, rngs):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), stride, padding=1, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
        if stride != 1 or cin != cout:
            self.downsample = nnx.Sequential(
                nnx.Conv(cin, cout, (1, 1), stride, padding=0, use_bias=False, rngs=rngs),
                nnx.BatchNorm(cout, rngs=rngs),
            )
        else:
            self.downsample = None

    def __call__(self, x):
        y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
        return nnx.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nnx.Module):
    """torchvision's ResNet-18 layout (NHWC), enough to count it."""

    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 64, (7, 7), 2, padding=3, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(64, rngs=rngs)
        cin = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nnx.List([BasicBlock(cin, width, stride, rngs),
                                                     BasicBlock(width, width, 1, rngs)]))
            cin = width
        self.fc = nnx.Linear(512, 1000, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.bn1(self.conv1(x))), (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block(x)
        return self.fc(x.mean(axis=(1, 2)))


@pytest.fixture(scope="module")
def resnet18():
    return nnx.eval_shape(lambda: ResNet18(nnx.Rngs(0)))


def _abstract(build):
    return nnx.eval_shape(lambda: build(nnx.Rngs(0)))


def test_conv_and_linear_by_hand():
    conv = _abstract(lambda rngs: nnx.Conv(3, 8, (3, 3), 2, padding=1, rngs=rngs))
    assert count_flops(conv, (2, 9, 11, 3)) == 2 * 5 * 6 * (3 * 3 * 3) * 8
    grouped = _abstract(lambda rngs: nnx.Conv(4, 6, (3, 1), padding="VALID", feature_group_count=2,
                                              rngs=rngs))
    assert count_flops(grouped, (1, 7, 7, 4)) == 5 * 7 * (3 * 1 * 2) * 6
    conv1d = _abstract(lambda rngs: nnx.Conv(3, 5, 4, kernel_dilation=2, padding="VALID", rngs=rngs))
    assert count_flops(conv1d, (2, 20, 3)) == 2 * 14 * 4 * 3 * 5
    linear = _abstract(lambda rngs: nnx.Linear(5, 7, rngs=rngs))
    assert count_flops(linear, (4, 3, 5)) == 12 * 5 * 7
    assert count_params(conv) == 3 * 3 * 3 * 8 + 8 and count_params(linear) == 5 * 7 + 7


def test_blocks_by_hand():
    cp = _abstract(lambda rngs: CPConv(16, 32, 3, 10, strides=2, padding=((1, 1), (1, 1)), rngs=rngs))
    # 15x15 -> 8x8: S->R at 15x15; depthwise and R->T at 8x8.
    assert count_flops(cp, (3, 15, 15, 16)) == 3 * (15 * 15 * 16 * 10 + 8 * 8 * 10 * (9 + 32))
    tkd = _abstract(lambda rngs: TKDCPConv(16, 32, 3, 10, (8, 6), merge=False, rngs=rngs))
    assert count_flops(tkd, (1, 6, 6, 16)) == 36 * (16 * 8 + 8 * 10 + 9 * 10 + 10 * 6 + 6 * 32)
    svd = _abstract(lambda rngs: SVDConv(16, 32, 4, strides=2, rngs=rngs))
    assert count_flops(svd, (2, 9, 9, 16)) == 2 * 5 * 5 * 4 * (16 + 32)
    dense = _abstract(lambda rngs: SVDDense(16, 32, 4, rngs=rngs))
    assert count_flops(dense, (5, 16)) == 5 * 4 * (16 + 32)
    for block in (cp, tkd, svd, dense):
        assert count_params(block) == block.num_params()


@pytest.mark.parametrize(("hw", "s", "t"), [(56, 64, 64), (28, 128, 128), (14, 256, 256), (7, 512, 512)])
def test_resnet18_conv_shapes_match_section_1_1(hw, s, t):
    # CP block of rank R: R (D^2 + S + T) weights (section 1.1) and, at stride 1,
    # H W R (S + D^2 + T) multiply-adds, against H W D^2 S T for the dense conv.
    rank = s // 2
    block = _abstract(lambda rngs: CPConv(s, t, 3, rank, padding=1, use_bias=False, rngs=rngs))
    conv = _abstract(lambda rngs: nnx.Conv(s, t, (3, 3), padding=1, use_bias=False, rngs=rngs))
    assert block.num_params() == rank * (9 + s + t)
    assert count_flops(block, (1, hw, hw, s)) == hw * hw * rank * (s + 9 + t)
    assert count_flops(conv, (1, hw, hw, s)) == hw * hw * 9 * s * t


def test_resnet18_total_and_per_layer(resnet18):
    assert count_flops(resnet18, (1, 224, 224, 3)) == RESNET18_MACS
    assert count_flops(resnet18, (4, 224, 224, 3)) == 4 * RESNET18_MACS
    assert count_params(resnet18) == RESNET18_PARAMS
    layers = count_flops(resnet18, (1, 224, 224, 3), by_layer=True)
    assert len(layers) == 21  # 20 convs (3 downsample shortcuts) and the fc
    assert layers["conv1"] == 112 * 112 * 49 * 3 * 64
    assert layers["layer2.0.conv1"] == 28 * 28 * 9 * 64 * 128
    assert layers["layer2.0.downsample.layers.0"] == 28 * 28 * 64 * 128
    assert layers["layer4.1.conv2"] == 7 * 7 * 9 * 512 * 512
    assert layers["fc"] == 512 * 1000
    assert sum(layers.values()) == RESNET18_MACS


def test_resnet18_matches_torch_flop_counter(resnet18):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):  # shapes only: no weights initialised, no arithmetic done
        reference = torchvision.models.resnet18().eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            reference(torch.zeros(1, 3, 112, 96))
    assert 2 * count_flops(resnet18, (1, 112, 96, 3)) == counter.get_total_flops()
    assert count_params(resnet18) == sum(p.numel() for p in reference.parameters())


def test_swapping_in_blocks_changes_the_count_by_their_flops():
    model = nnx.eval_shape(lambda: ResNet18(nnx.Rngs(0)))
    before = count_flops(model, (1, 224, 224, 3), by_layer=True)
    model.layer3[0].conv1 = _abstract(lambda rngs: CPConv(128, 256, 3, 100, strides=2, padding=1, rngs=rngs))
    model.layer4[1].conv2 = _abstract(lambda rngs: TKDCPConv(512, 512, 3, 300, (128, 160), padding=1,
                                                             rngs=rngs))
    model.layer2[0].downsample.layers[0] = _abstract(lambda rngs: SVDConv(64, 128, 32, strides=2, rngs=rngs))
    model.fc = _abstract(lambda rngs: SVDDense(512, 1000, 64, rngs=rngs))
    after = count_flops(model, (1, 224, 224, 3), by_layer=True)
    changed = {
        "layer3.0.conv1": model.layer3[0].conv1.flops((28, 28)),
        "layer4.1.conv2": model.layer4[1].conv2.flops((7, 7)),
        "layer2.0.downsample.layers.0": model.layer2[0].downsample.layers[0].flops((56, 56)),
        "fc": model.fc.flops(),
    }
    assert after == before | changed
    assert changed["layer3.0.conv1"] == 28 * 28 * 128 * 100 + 14 * 14 * 100 * (9 + 256)


def test_repeated_calls_are_counted_each_time_and_nested_layers_once():
    class Twice(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(4, 4, (3, 3), rngs=rngs)

        def __call__(self, x):
            return self.conv(self.conv(x))

    class Wrapper(nnx.Linear):
        def __call__(self, x):
            return super().__call__(x) * 2

    assert count_flops(_abstract(Twice), (1, 5, 5, 4)) == 2 * 25 * 9 * 16
    assert count_flops(_abstract(lambda rngs: Wrapper(3, 2, rngs=rngs)), (1, 3)) == 6


def test_leaves_model_state_and_classes_untouched():
    model = nnx.Sequential(nnx.Conv(3, 4, (3, 3), rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    model.layers[1].mean.set_value(jnp.arange(4.0))
    call = nnx.Conv.__call__
    count_flops(model, (2, 8, 8, 3))  # a batch norm in training mode would update its statistics
    np.testing.assert_array_equal(model.layers[1].mean[...], np.arange(4.0))
    assert nnx.Conv.__call__ is call and "__call__" not in vars(CPConv)

    class Broken(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 3, (3, 3), rngs=rngs)

        def __call__(self, x):
            self.conv(x)
            raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        count_flops(_abstract(Broken), (1, 4, 4, 3))
    assert nnx.Conv.__call__ is call


def test_call_kwargs_and_dtype_are_forwarded():
    class Gated(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(4, 4, rngs=rngs)
            self.b = nnx.Linear(4, 8, rngs=rngs)

        def __call__(self, x, *, deep=False):
            assert x.dtype == jnp.bfloat16
            return self.b(self.a(x)) if deep else self.a(x)

    model = _abstract(Gated)
    assert count_flops(model, (2, 4), dtype=jnp.bfloat16) == 2 * 16
    assert count_flops(model, (2, 4), dtype=jnp.bfloat16, deep=True) == 2 * 16 + 2 * 32


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"model must be a flax.nnx.Module, got function"):
        count_flops(lambda x: x, (1, 3))
    with pytest.raises(ValueError, match=r"model must be a flax.nnx.Module, got dict"):
        count_params({})
    with pytest.raises(ValueError, match=r"input_shape must be a sequence of ints, got 3"):
        count_flops(_abstract(lambda rngs: nnx.Linear(3, 2, rngs=rngs)), 3)
    with pytest.raises(ValueError, match=r"module must be one of .*, got BatchNorm"):
        layer_flops(_abstract(lambda rngs: nnx.BatchNorm(3, rngs=rngs)), (1, 3), (1, 3))
