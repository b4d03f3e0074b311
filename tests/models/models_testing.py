"""Helpers for the model tests: torch import, randomised torchvision references, layout conversion."""

import numpy as np
import pytest
from flax import nnx

from jaxcpd.models import named_modules, resnet18, resnet34, resnet50, set_submodule, vgg16

TORCH_THREADS = 2  # the test machines have 2 cores shared with other runs

# torchvision builder name -> (our builder, its keyword arguments)
PORTS = {
    "resnet18": (resnet18, {}),
    "resnet34": (resnet34, {}),
    "resnet50": (resnet50, {}),
    "vgg16": (vgg16, {}),
    "vgg16_bn": (vgg16, {"batch_norm": True}),
}


def import_torch():
    """Returns ``(torch, torchvision)``, skipping the test when torch is not installed."""
    reason = "torch/torchvision not installed (pip install 'jaxcpd[torch]'); CI installs them"
    torch = pytest.importorskip("torch", reason=reason)
    torchvision = pytest.importorskip("torchvision", reason=reason)
    torch.set_num_threads(TORCH_THREADS)
    return torch, torchvision


def randomize_(torch_model, seed=0):
    """Randomises batch-norm statistics and affine terms and all biases, in place.

    torchvision initialises them to constants (mean 0, var 1, weight 1, zero
    biases), which would hide a swapped or dropped tensor in the import.
    """
    torch = import_torch()[0]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in torch_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=gen)
                module.bias.normal_(0.0, 0.1, generator=gen)
                module.running_mean.normal_(0.0, 0.1, generator=gen)
                module.running_var.uniform_(0.5, 1.5, generator=gen)
            elif isinstance(module, torch.nn.Conv2d | torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.01, generator=gen)
    return torch_model


def abstract(builder, **kwargs):
    """The model's structure without running the random initialisers (weights are loaded next).

    Random init is slow on CPU (VGG-16's 138M normals take tens of seconds). Dropout
    layers hold an RNG key rather than weights, so they are rebuilt for real.
    """
    model = nnx.eval_shape(lambda: builder(rngs=nnx.Rngs(0), **kwargs))
    for name, module in list(named_modules(model)):
        if isinstance(module, nnx.Dropout):
            set_submodule(model, name, nnx.Dropout(module.rate, rngs=nnx.Rngs(0)))
    return model


class StandIn(nnx.Module):
    """Stands in for a compressed block: any module with ``dense_kernel()`` fills a conv slot."""

    def __init__(self, conv):
        self.inner = conv

    def dense_kernel(self):
        return self.inner.kernel[...]

    def __call__(self, x):
        return self.inner(x)


def nchw_to_nhwc(x):
    return np.ascontiguousarray(np.transpose(np.asarray(x), (0, 2, 3, 1)))


def max_relative_error(ours, reference):
    """``max|ours - ref| / max|ref|``: the parity measure of the issue (1e-4)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@nnx.jit
def forward(model, x):
    """One jitted forward pass shared by the tests (compiled once per model and input shape)."""
    return model(x)
