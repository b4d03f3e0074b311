"""ResNet-18/34/50 and VGG-16(-BN) in Flax NNX, with torchvision weight import and export.

Submodule names are torchvision's (``layer4.1.conv1``, ``features.28``), so they
serve as report names, state-dict key prefixes and surgery targets alike.
"""

from .naming import get_submodule, is_conv_slot, named_convs, named_modules, set_submodule
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from .torchvision_io import load_torchvision, save_torchvision, torchvision_state_dict
from .vgg import VGG, vgg16

__all__ = [
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "get_submodule",
    "is_conv_slot",
    "load_torchvision",
    "named_convs",
    "named_modules",
    "resnet18",
    "resnet34",
    "resnet50",
    "save_torchvision",
    "set_submodule",
    "torchvision_state_dict",
    "vgg16",
]
