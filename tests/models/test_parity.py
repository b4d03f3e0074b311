"""Parity with torchvision: same weights and input give the same logits; weights survive a round trip.

Reference models are torchvision's, randomly initialised, with randomised batch-norm
statistics and biases (see ``randomize_``), in eval mode.
"""

import numpy as np
import pytest
from models_testing import (
    PORTS,
    abstract,
    forward,
    import_torch,
    max_relative_error,
    nchw_to_nhwc,
    randomize_,
)

from jaxcpd.models import load_torchvision, resnet18, save_torchvision

TOLERANCE = 1e-4  # max|ours - torch| / max|torch| over the logits

# name -> (input sizes to compare, file format of the round trip)
CASES = {
    "resnet18": ((224, 65), ".safetensors"),  # 65: odd size, every padding and pooling edge case
    "resnet50": ((224,), ".pth"),
    "vgg16": ((224, 64), ".safetensors"),  # 64: adaptive pooling upsamples the 2x2 map to 7x7
}


@pytest.fixture(scope="module", params=list(CASES))
def pair(request):
    """``(name, torchvision model, our model)`` with identical weights, both in eval mode."""
    torch, torchvision = import_torch()
    name = request.param
    torch.manual_seed(0)
    reference = randomize_(getattr(torchvision.models, name)()).eval()
    builder, kwargs = PORTS[name]
    model = load_torchvision(abstract(builder, **kwargs), reference.state_dict())
    model.eval()
    yield name, reference, model


def test_logits_match_torchvision(pair):
    torch, _ = import_torch()
    name, reference, model = pair
    for size in CASES[name][0]:
        x = np.random.default_rng(size).standard_normal((2, 3, size, size), dtype=np.float32)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        got = np.asarray(forward(model, nchw_to_nhwc(x)))
        error = max_relative_error(got, expected)
        print(f"{name} {size}x{size}: max relative logit difference {error:.2e}")
        assert error < TOLERANCE, (name, size, error)


def test_round_trip_gives_identical_tensors(pair, tmp_path):
    torch, torchvision = import_torch()
    name, reference, model = pair
    path = tmp_path / f"{name}{CASES[name][1]}"
    save_torchvision(model, path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        saved = load_file(path)
    else:
        saved = torch.load(path, weights_only=True)
    with torch.device("meta"):
        restored = getattr(torchvision.models, name)()
    restored.load_state_dict(saved, strict=True, assign=True)
    original = reference.state_dict()
    restored_state = restored.state_dict()
    assert list(restored_state) == list(original)
    for key, tensor in original.items():
        assert restored_state[key].dtype == tensor.dtype, key
        assert torch.equal(restored_state[key], tensor), key


def test_train_mode_matches_torch_batch_statistics():
    """One training-mode step: batch-statistics logits and the momentum-0.1 running averages agree."""
    torch, torchvision = import_torch()
    torch.manual_seed(1)
    reference = randomize_(torchvision.models.resnet18(num_classes=10), seed=1).train()
    model = load_torchvision(abstract(resnet18, num_classes=10), reference.state_dict())
    model.train()
    mean0, var0 = np.asarray(model.bn1.mean[...]), np.asarray(model.bn1.var[...])
    x = np.random.default_rng(2).standard_normal((2, 3, 48, 48), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    got = np.asarray(forward(model, nchw_to_nhwc(x)))
    assert max_relative_error(got, expected) < TOLERANCE
    np.testing.assert_allclose(model.bn1.mean[...], reference.bn1.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.bn1.mean[...], mean0)
    # torch folds in the unbiased batch variance, Flax the biased one (n = N*H*W values per channel)
    n = 2 * 24 * 24
    torch_batch_var = (reference.bn1.running_var.numpy() - 0.9 * var0) / 0.1
    np.testing.assert_allclose(
        model.bn1.var[...], 0.9 * var0 + 0.1 * torch_batch_var * (n - 1) / n, rtol=1e-5
    )
