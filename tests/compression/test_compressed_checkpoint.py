"""save_compressed / load_compressed: a fresh process rebuilds the model without decomposing again.

(Named test_compressed_checkpoint.py: tests/train/test_checkpoint.py already owns the basename.)
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from compression_testing import SMALL_RESNET18, eval_logits
from flax import nnx

import jaxcpd
from jaxcpd import LayerPlan
from jaxcpd.compression import build_model
from jaxcpd.models import get_submodule

# Runs in a new interpreter: forbids every decomposition, loads the saved models, writes their
# evaluation-mode logits and the block types of the planned layers.
CHILD = """
import json, sys
import numpy as np
import jaxcpd, jaxcpd.compression.decompose as decompose, jaxcpd.compression.surgery as surgery
from compression_testing import eval_logits
from jaxcpd.models import get_submodule

def forbidden(*args, **kwargs):
    raise AssertionError("load_compressed must not decompose")

for module, name in [(jaxcpd, "cp_als"), (jaxcpd, "cpd_epc"), (jaxcpd, "tkd_cpd"), (jaxcpd, "tucker2"),
                     (decompose, "decomposition_fn"), (decompose, "cpd_epc"), (decompose, "cp_als"),
                     (decompose, "tkd_cpd"), (decompose, "tucker2"), (decompose, "truncated_svd"),
                     (surgery, "decompose_batch")]:
    setattr(module, name, forbidden)

out, x = sys.argv[1], np.load(sys.argv[2])
types = {}
for case in sys.argv[3:]:
    model = jaxcpd.load_compressed(f"{out}/{case}")
    np.save(f"{out}/{case}_logits.npy", eval_logits(model, x))
    plan = json.load(open(f"{out}/{case}/model.json"))["plan"]
    types[case] = {name: type(get_submodule(model, name)).__name__ for name in plan}
json.dump(types, open(f"{out}/types.json", "w"))
"""


def test_save_then_load_in_a_new_process_gives_identical_logits(compressed_third, lossless, batch, tmp_path):
    cases = {"third": compressed_third, "lossless": lossless}
    for case, compressed in cases.items():
        plan = compressed.report.concrete_plan()
        assert plan == compressed.plan  # fixed ranks: the concrete plan is the plan
        jaxcpd.save_compressed(tmp_path / case, compressed.model, plan, arch=SMALL_RESNET18)
    np.save(tmp_path / "x.npy", batch)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(tmp_path / "x.npy"), *cases],
        cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    types = json.loads((tmp_path / "types.json").read_text())
    for case, compressed in cases.items():
        want = eval_logits(compressed.model, batch)
        np.testing.assert_array_equal(np.load(tmp_path / f"{case}_logits.npy"), want)
        assert types[case] == {name: type(get_submodule(compressed.model, name)).__name__
                               for name in compressed.plan}
    assert set(types["lossless"].values()) == {"Tucker2Conv", "CPConv", "TKDCPConv", "SVDConv", "SVDDense"}


def test_saved_directory_layout(compressed_third, tmp_path):
    path = jaxcpd.save_compressed(tmp_path / "m", compressed_third.model, compressed_third.plan,
                                  arch=SMALL_RESNET18)
    assert path == (tmp_path / "m").absolute()
    meta = json.loads((path / "model.json").read_text())
    assert meta["arch"] == SMALL_RESNET18
    assert meta["plan"]["layer1.0.conv1"] == {"method": "cpd-epc", "rank": 90}
    assert (path / "state").is_dir()


def test_build_model_validates_the_architecture():
    with pytest.raises(ValueError, match=r"arch must be a dict with a 'name' key, got \['resnet18'\]"):
        build_model(["resnet18"])
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet19'; valid: \['resnet18', 'resnet34', "
                                         r"'resnet50', 'vgg16'\]"):
        build_model({"name": "resnet19"})


def test_save_and_load_errors(tmp_path):
    net = nnx.eval_shape(lambda: build_model(SMALL_RESNET18))
    bounded = {"layer2.0.downsample.0": LayerPlan("svd", error_bound=0.1)}
    with pytest.raises(ValueError, match=r"plan has error bounds; pass report.concrete_plan\(\)"):
        jaxcpd.save_compressed(tmp_path / "a", net, bounded, arch=SMALL_RESNET18)
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet'"):
        jaxcpd.save_compressed(tmp_path / "b", net, {}, arch={"name": "resnet"})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written on error
    with pytest.raises(ValueError, match=r"no saved compressed model in .*empty \(model.json missing\)"):
        jaxcpd.load_compressed(tmp_path / "empty")
    message = r"plan entry 'layer1.0.conv1' has an error bound; a saved plan needs concrete ranks"
    with pytest.raises(ValueError, match=message):
        jaxcpd.compression.apply_structure(net, {"layer1.0.conv1": LayerPlan("tucker2", error_bound=0.2)})
