"""ResNet-18/34/50 in Flax NNX, structured like ``torchvision.models.resnet``.

Attribute paths are torchvision's module names (``conv1``, ``bn1``,
``layer1[0].conv1``, ``layer4[1].downsample[0]``, ``fc``), so a report name such as
``layer4.1.conv1`` is both ``get_submodule(model, "layer4.1.conv1")`` and the
prefix of the torchvision state-dict key ``layer4.1.conv1.weight``. ResNet-50 is
torchvision's v1.5 (stride on the 3x3 conv of each bottleneck).

Inputs are NHWC. Convolution slots are called generically (``self.conv1(x)``), so
model surgery may put any module with the same input/output shapes in their place.
Batch norm follows NNX practice: modules are built in training mode (batch
statistics, running averages updated); call ``model.eval()`` for inference with
the running averages and ``model.train()`` to switch back.

References:
  He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

import jax
from flax import nnx

from ._layers import MaxPool2d, Sequential, batch_norm, check_nhwc, check_positive_int, conv2d, linear


def _downsample(in_planes: int, out_planes: int, stride: int, rngs: nnx.Rngs) -> Sequential | None:
    """torchvision's projection shortcut (1x1 conv + BN), or ``None`` for the identity."""
    if stride == 1 and in_planes == out_planes:
        return None
    return Sequential(
        [conv2d(in_planes, out_planes, 1, stride=stride, rngs=rngs), batch_norm(out_planes, rngs=rngs)]
    )


class BasicBlock(nnx.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34).

    Args:
      in_planes: input channels.
      planes: output channels.
      stride: stride of the first conv and of the projection shortcut.
      rngs: random streams for the initialisers.
    """

    expansion = 1
    child_order = ("conv1", "bn1", "conv2", "bn2", "downsample")  # forward order, see naming.py

    def __init__(self, in_planes: int, planes: int, *, stride: int = 1, rngs: nnx.Rngs):
        self.conv1 = conv2d(in_planes, planes, 3, stride=stride, padding=1, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.conv2 = conv2d(planes, planes, 3, padding=1, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.downsample = _downsample(in_planes, planes, stride, rngs)

    def __call__(self, x):
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return jax.nn.relu(out + identity)


class Bottleneck(nnx.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with 4x expansion (ResNet-50, torchvision v1.5).

    Args:
      in_planes: input channels.
      planes: width of the 3x3 conv; the block outputs ``4 * planes`` channels.
      stride: stride of the 3x3 conv and of the projection shortcut.
      rngs: random streams for the initialisers.
    """

    expansion = 4
    child_order = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample")

    def __init__(self, in_planes: int, planes: int, *, stride: int = 1, rngs: nnx.Rngs):
        out_planes = planes * self.expansion
        self.conv1 = conv2d(in_planes, planes, 1, rngs=rngs)
        self.bn1 = batch_norm(planes, rngs=rngs)
        self.conv2 = conv2d(planes, planes, 3, stride=stride, padding=1, rngs=rngs)
        self.bn2 = batch_norm(planes, rngs=rngs)
        self.conv3 = conv2d(planes, out_planes, 1, rngs=rngs)
        self.bn3 = batch_norm(out_planes, rngs=rngs)
        self.downsample = _downsample(in_planes, out_planes, stride, rngs)

    def __call__(self, x):
        out = jax.nn.relu(self.bn1(self.conv1(x)))
        out = jax.nn.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return jax.nn.relu(out + identity)


class ResNet(nnx.Module):
    """A torchvision-compatible ResNet.

    Args:
      block: ``BasicBlock`` or ``Bottleneck``.
      stage_sizes: number of blocks in ``layer1`` .. ``layer4``.
      num_classes: size of the ``fc`` output.
      small_input: CIFAR-style stem for 32x32 / 28x28 inputs: ``conv1`` is a 3x3
        stride-1 conv and there is no max-pool. Such a model does not take
        ImageNet ``conv1`` weights (the kernel shape differs).
      in_channels: input channels (1 for MNIST).
      width: channels of ``conv1`` and ``layer1``; the stages have ``width``,
        ``2 width``, ``4 width`` and ``8 width`` (torchvision: 64). Narrow variants
        (e.g. 16) are for quick CPU experiments; only 64 takes torchvision weights.
      rngs: random streams for the initialisers.
    """

    child_order = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc")

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        stage_sizes: tuple[int, int, int, int],
        num_classes: int = 1000,
        *,
        small_input: bool = False,
        in_channels: int = 3,
        width: int = 64,
        rngs: nnx.Rngs,
    ):
        num_classes = check_positive_int(num_classes, "num_classes")
        width = check_positive_int(width, "width")
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.small_input = bool(small_input)
        if self.small_input:
            self.conv1 = conv2d(self.in_channels, width, 3, stride=1, padding=1, rngs=rngs)
        else:
            self.conv1 = conv2d(self.in_channels, width, 7, stride=2, padding=3, rngs=rngs)
        self.bn1 = batch_norm(width, rngs=rngs)
        self.maxpool = None if self.small_input else MaxPool2d(3, stride=2, padding=1)
        in_planes = width
        stages = []
        widths = (width, 2 * width, 4 * width, 8 * width)
        for index, (planes, num_blocks) in enumerate(zip(widths, stage_sizes, strict=True)):
            blocks = []
            for b in range(num_blocks):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(block(in_planes, planes, stride=stride, rngs=rngs))
                in_planes = planes * block.expansion
            stages.append(Sequential(blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = linear(in_planes, num_classes, rngs=rngs)

    def __call__(self, x):
        """Logits for an NHWC batch.

        Args:
          x: ``(N, H, W, in_channels)`` images.

        Returns:
          ``(N, num_classes)`` logits.
        """
        check_nhwc(x, self.in_channels)
        x = jax.nn.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(axis=(1, 2)))


def resnet18(
    num_classes: int = 1000,
    *,
    small_input: bool = False,
    in_channels: int = 3,
    width: int = 64,
    rngs: nnx.Rngs,
):
    """ResNet-18, torchvision's ``resnet18``.

    Args:
      num_classes: size of the ``fc`` output (positive).
      small_input: CIFAR-style stem (3x3 stride-1 ``conv1``, no max-pool) for 32x32 / 28x28 inputs.
      in_channels: input channels (1 for MNIST).
      width: base width (torchvision: 64; see :class:`ResNet`).
      rngs: random streams for the initialisers.

    Returns:
      A :class:`ResNet` in training mode (call ``.eval()`` for inference).
    """
    return ResNet(
        BasicBlock,
        (2, 2, 2, 2),
        num_classes,
        small_input=small_input,
        in_channels=in_channels,
        width=width,
        rngs=rngs,
    )


def resnet34(
    num_classes: int = 1000,
    *,
    small_input: bool = False,
    in_channels: int = 3,
    width: int = 64,
    rngs: nnx.Rngs,
):
    """ResNet-34, torchvision's ``resnet34``.

    Args:
      num_classes: size of the ``fc`` output (positive).
      small_input: CIFAR-style stem (3x3 stride-1 ``conv1``, no max-pool) for 32x32 / 28x28 inputs.
      in_channels: input channels (1 for MNIST).
      width: base width (torchvision: 64; see :class:`ResNet`).
      rngs: random streams for the initialisers.

    Returns:
      A :class:`ResNet` in training mode (call ``.eval()`` for inference).
    """
    return ResNet(
        BasicBlock,
        (3, 4, 6, 3),
        num_classes,
        small_input=small_input,
        in_channels=in_channels,
        width=width,
        rngs=rngs,
    )


def resnet50(
    num_classes: int = 1000,
    *,
    small_input: bool = False,
    in_channels: int = 3,
    width: int = 64,
    rngs: nnx.Rngs,
):
    """ResNet-50 v1.5, torchvision's ``resnet50``.

    Args:
      num_classes: size of the ``fc`` output (positive).
      small_input: CIFAR-style stem (3x3 stride-1 ``conv1``, no max-pool) for 32x32 / 28x28 inputs.
      in_channels: input channels (1 for MNIST).
      width: base width (torchvision: 64; see :class:`ResNet`).
      rngs: random streams for the initialisers.

    Returns:
      A :class:`ResNet` in training mode (call ``.eval()`` for inference).
    """
    return ResNet(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes,
        small_input=small_input,
        in_channels=in_channels,
        width=width,
        rngs=rngs,
    )
