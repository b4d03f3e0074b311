"""Reading and writing torchvision state dicts: sources, strictness and error messages."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from models_testing import StandIn, abstract, import_torch

from jaxcpd.models import load_torchvision, resnet18, save_torchvision, set_submodule, torchvision_state_dict


@pytest.fixture(scope="module")
def state_dict():
    """A torchvision ResNet-18 (10 classes) state dict of torch tensors."""
    torch, torchvision = import_torch()
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).state_dict()


def fresh_model():
    return abstract(resnet18, num_classes=10)


def assert_holds(model, state):
    ours = torchvision_state_dict(model)
    assert list(ours) == list(state)
    for key, value in state.items():
        np.testing.assert_array_equal(ours[key], np.asarray(value), err_msg=key)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_load_from_file(state_dict, tmp_path, suffix):
    torch, _ = import_torch()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state_dict, path)
    else:
        torch.save(state_dict, path)
    assert_holds(load_torchvision(fresh_model(), str(path)), state_dict)


def test_load_from_mappings_of_numpy_jax_and_bfloat16(state_dict):
    torch, _ = import_torch()
    numpy_state = {k: v.numpy() for k, v in state_dict.items()}
    assert_holds(load_torchvision(fresh_model(), numpy_state), state_dict)
    jax_state = {k: jnp.asarray(v) for k, v in numpy_state.items()}
    assert_holds(load_torchvision(fresh_model(), jax_state), state_dict)
    half = dict(state_dict, **{"fc.weight": state_dict["fc.weight"].to(torch.bfloat16)})
    model = load_torchvision(fresh_model(), half)
    assert model.fc.kernel[...].dtype == jnp.float32
    np.testing.assert_array_equal(model.fc.kernel[...].T, half["fc.weight"].float().numpy())


def test_load_bfloat16_safetensors(state_dict, tmp_path):
    torch, _ = import_torch()
    from safetensors.torch import save_file

    half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state_dict.items()}
    save_file(half, tmp_path / "half.safetensors")
    model = load_torchvision(fresh_model(), tmp_path / "half.safetensors")
    assert model.conv1.kernel[...].dtype == jnp.float32
    np.testing.assert_array_equal(model.fc.bias[...], half["fc.bias"].float().numpy())


def test_num_batches_tracked_is_optional(state_dict):
    without = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assert_holds(load_torchvision(fresh_model(), without), state_dict)


def test_missing_key_is_named(state_dict):
    broken = {k: v for k, v in state_dict.items() if k != "layer4.1.bn2.running_var"}
    with pytest.raises(
        ValueError, match=r"missing keys \(1\): layer4.1.bn2.running_var \(expected shape \(512,\)\)"
    ):
        load_torchvision(fresh_model(), broken)


def test_unexpected_keys_are_named(state_dict):
    broken = dict(
        state_dict, **{"fc.extra": np.zeros(3), "conv1.num_batches_tracked": np.zeros((), np.int64)}
    )
    with pytest.raises(
        ValueError, match=r"unexpected keys \(2\): fc.extra \(shape \(3,\)\), conv1.num_batches"
    ):
        load_torchvision(fresh_model(), broken)


def test_wrong_shapes_are_named(state_dict):
    torch, torchvision = import_torch()
    imagenet = torchvision.models.resnet18().state_dict()
    with pytest.raises(ValueError) as info:
        load_torchvision(fresh_model(), imagenet)
    message = str(info.value)
    assert (
        "mis-shaped keys (2): fc.weight: got (1000, 512), expected (10, 512), fc.bias: got (1000,)" in message
    )
    assert "missing" not in message and "unexpected" not in message
    small = abstract(resnet18, num_classes=10, small_input=True)
    with pytest.raises(ValueError, match=r"conv1.weight: got \(64, 3, 7, 7\), expected \(64, 3, 3, 3\)"):
        load_torchvision(small, state_dict)


def test_failed_load_changes_nothing(state_dict):
    model = load_torchvision(fresh_model(), state_dict)
    broken = {k: np.ones(v.shape, np.float32) for k, v in state_dict.items() if k != "fc.bias"}
    with pytest.raises(ValueError, match="missing keys"):
        load_torchvision(model, broken)
    assert_holds(model, state_dict)


def test_data_parallel_prefix_gets_a_hint(state_dict):
    prefixed = {f"module.{k}": v for k, v in state_dict.items()}
    with pytest.raises(ValueError, match="strip the DataParallel prefix"):
        load_torchvision(fresh_model(), prefixed)


def test_bad_sources(tmp_path):
    torch, _ = import_torch()
    with pytest.raises(
        ValueError, match="source must be a path to a .pth/.pt/.safetensors file or a mapping"
    ):
        load_torchvision(fresh_model(), 42)
    with pytest.raises(ValueError, match=r"source file must end in one of .pth, .pt, .safetensors"):
        load_torchvision(fresh_model(), tmp_path / "weights.npz")
    with pytest.raises(ValueError, match="does not exist"):
        load_torchvision(fresh_model(), tmp_path / "absent.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        load_torchvision(fresh_model(), tmp_path / "list.pth")
    with pytest.raises(ValueError, match="entry 'fc.bias' is not a numeric array"):
        load_torchvision(fresh_model(), {"fc.bias": {"nested": 1}})


def test_save_validates_path(state_dict, tmp_path):
    model = load_torchvision(fresh_model(), state_dict)
    with pytest.raises(ValueError, match="path must end in one of"):
        save_torchvision(model, tmp_path / "weights.h5")
    with pytest.raises(ValueError, match="directory .* does not exist"):
        save_torchvision(model, tmp_path / "no" / "weights.pth")


def test_compressed_models_are_refused(state_dict, tmp_path):
    model = load_torchvision(fresh_model(), state_dict)
    set_submodule(model, "layer4.1.conv1", StandIn(model.layer4[1].conv1))
    match = r"conv slots hold compressed blocks: layer4.1.conv1 \(StandIn\)"
    with pytest.raises(ValueError, match=match):
        save_torchvision(model, tmp_path / "weights.safetensors")
    with pytest.raises(ValueError, match=match):
        load_torchvision(model, state_dict)
    assert not (tmp_path / "weights.safetensors").exists()


def test_layers_without_torch_counterpart_are_refused(state_dict):
    model = load_torchvision(fresh_model(), state_dict)
    set_submodule(model, "bn1", nnx.LayerNorm(64, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="variables with no torchvision counterpart: bn1.bias, bn1.scale"):
        torchvision_state_dict(model)


def test_importing_models_does_not_import_torch():
    code = "import sys, jaxcpd.models; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", "import jaxcpd.models pulled in torch"
