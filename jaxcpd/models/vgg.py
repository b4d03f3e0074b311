"""VGG-16 (with or without batch norm) in Flax NNX, structured like ``torchvision.models.vgg``.

``features`` and ``classifier`` are indexable lists whose indices are
torchvision's (``features[28]`` is the last conv of ``vgg16``, ``classifier[0]`` the
first linear layer), so ``features.28`` is both a report name and the prefix of
the state-dict key ``features.28.weight``.

Two choices keep the import a plain per-layer transpose and make any input size
behave like torchvision:

- **Flatten order.** Torch flattens the pooled ``(N, 512, 7, 7)`` map in NCHW
  order. We transpose the NHWC map to NCHW before flattening, so
  ``classifier[0].kernel`` is exactly torch's ``classifier.0.weight`` transposed
  and no row permutation is needed when loading or saving weights.
- **Adaptive pooling.** ``avgpool`` is torch's ``AdaptiveAvgPool2d((7, 7))``
  (same bin edges), so inputs other than 224x224 (down to 32x32) give torch's
  logits too.

Inputs are NHWC; ``model.eval()`` switches batch norm to running averages and
disables dropout, ``model.train()`` switches back (models are built in training
mode, as in torch).

References:
  Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
  Recognition", ICLR 2015.
"""

from __future__ import annotations

from flax import nnx

from ._layers import (
    MaxPool2d,
    ReLU,
    Sequential,
    adaptive_avg_pool2d,
    check_nhwc,
    check_positive_int,
    conv2d,
    linear,
)
from ._layers import batch_norm as norm_layer  # `batch_norm` is also VGG's flag

_VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_POOLED_SIZE = (7, 7)


class VGG(nnx.Module):
    """A torchvision-compatible VGG.

    Args:
      config: channel widths of the 3x3 convs, ``"M"`` for a 2x2 max-pool
        (torchvision's ``cfgs`` entries).
      num_classes: size of the last classifier layer.
      batch_norm: insert batch norm after every conv (torchvision's ``vgg16_bn``).
      in_channels: input channels.
      dropout: dropout rate of the two hidden classifier layers.
      rngs: random streams for the initialisers and dropout.
    """

    child_order = ("features", "classifier")  # forward order, see naming.py

    def __init__(
        self,
        config: tuple[int | str, ...],
        num_classes: int = 1000,
        *,
        batch_norm: bool = False,
        in_channels: int = 3,
        dropout: float = 0.5,
        rngs: nnx.Rngs,
    ):
        num_classes = check_positive_int(num_classes, "num_classes")
        self.in_channels = check_positive_int(in_channels, "in_channels")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
        # each 2x2 max-pool halves the size (rounding down); the last one must leave a pixel
        self.min_input_size = 2 ** sum(width == "M" for width in config)
        layers = []
        channels = self.in_channels
        for width in config:
            if width == "M":
                layers.append(MaxPool2d(2, stride=2))
                continue
            layers.append(conv2d(channels, width, 3, padding=1, use_bias=True, rngs=rngs))
            if batch_norm:
                layers.append(norm_layer(width, rngs=rngs))
            layers.append(ReLU())
            channels = width
        self.features = Sequential(layers)
        hidden_init = nnx.initializers.normal(0.01)
        flat_features = channels * _POOLED_SIZE[0] * _POOLED_SIZE[1]
        self.classifier = Sequential(
            [
                linear(flat_features, 4096, kernel_init=hidden_init, rngs=rngs),
                ReLU(),
                nnx.Dropout(dropout, rngs=rngs),
                linear(4096, 4096, kernel_init=hidden_init, rngs=rngs),
                ReLU(),
                nnx.Dropout(dropout, rngs=rngs),
                linear(4096, num_classes, kernel_init=hidden_init, rngs=rngs),
            ]
        )

    def __call__(self, x):
        """Logits for an NHWC batch.

        Args:
          x: ``(N, H, W, in_channels)`` images, ``H, W >= min_input_size`` (32 for VGG-16).

        Returns:
          ``(N, num_classes)`` logits.
        """
        check_nhwc(x, self.in_channels, min_size=self.min_input_size)
        x = adaptive_avg_pool2d(self.features(x), _POOLED_SIZE)
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # torch's NCHW flatten order
        return self.classifier(x)


def vgg16(
    num_classes: int = 1000,
    *,
    batch_norm: bool = False,
    in_channels: int = 3,
    dropout: float = 0.5,
    rngs: nnx.Rngs,
):
    """VGG-16, torchvision's ``vgg16`` (or ``vgg16_bn`` with ``batch_norm=True``).

    Args:
      num_classes: size of the last classifier layer (positive).
      batch_norm: batch norm after every conv (``vgg16_bn`` layout and indices).
      in_channels: input channels.
      dropout: dropout rate in the classifier (torchvision's default 0.5).
      rngs: random streams for the initialisers and dropout.

    Returns:
      A :class:`VGG` in training mode (call ``.eval()`` for inference).
    """
    return VGG(
        _VGG16_CONFIG,
        num_classes,
        batch_norm=batch_norm,
        in_channels=in_channels,
        dropout=dropout,
        rngs=rngs,
    )
