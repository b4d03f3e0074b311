"""Single-layer CPD vs CPD-EPC study (Fig. 2 / Fig. 4 right): rank parsing, kernel reading, numbers, files.

References are independent of the module: numpy recomputation of eq. 3 / eq. 5 and of the
relative error from the factors of a fresh ``jaxcpd.cpd_epc`` / ``jaxcpd.tkd_cpd`` call, and
arrays written to state-dict files by the test itself (torch, safetensors, numpy).
"""

from collections import OrderedDict

import jax
import matplotlib.image
import numpy as np
import pytest
from safetensors.numpy import save_file

import jaxcpd
from jaxcpd.experiments.layer_study import LayerStudy, layer_study, parse_ranks, read_kernel

KEY = jax.random.PRNGKey(3)
ALS = {"max_iter": 100, "tol": 1e-6}
EPC = {"max_iter": 50, "tol": 1e-5}
RANKS = (4, 12)


# --------------------------------------------------------------------------- parse_ranks


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("30", (30,)),
        (" 7 ", (7,)),
        ("10,20,50", (10, 20, 50)),
        ("50, 10,10", (10, 50)),
        ("10:50:10", (10, 20, 30, 40, 50)),
        ("10:25:10", (10, 20)),
        ("5:5:1", (5,)),
    ],
)
def test_parse_ranks(spec, expected):
    assert parse_ranks(spec) == expected


def test_parse_ranks_paper_range():
    ranks = parse_ranks("10:500:10")
    assert ranks == tuple(range(10, 501, 10)) and len(ranks) == 50


@pytest.mark.parametrize(
    "spec", ["", "0", "-5", "abc", "2.5", "10,,20", "10,0", "1:2", "1:2:3:4", "10:5:1", "10:20:0", "0:20:5"]
)
def test_parse_ranks_errors(spec):
    with pytest.raises(ValueError, match="bad ranks") as info:
        parse_ranks(spec)
    assert repr(spec) in str(info.value)


def test_bad_key_is_a_value_error():
    kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="key must be a jax.random key"):
        layer_study(kernel, (2,), key=0)


# --------------------------------------------------------------------------- read_kernel


def _state():
    """A small torchvision-like state dict (OIHW conv weights), in module order."""
    rng = np.random.default_rng(1)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return OrderedDict(
        [
            ("conv1.weight", f(8, 3, 3, 3)),
            ("bn1.weight", f(8)),
            ("bn1.running_mean", f(8)),
            ("layer1.0.conv1.weight", f(16, 8, 3, 3)),
            ("layer1.0.bn1.running_mean", f(16)),
            ("layer1.0.conv2.weight", f(16, 16, 1, 1)),
            ("fc.weight", f(10, 16)),
            ("fc.bias", f(10)),
        ]
    )


def _hwio(oihw):
    return np.transpose(oihw, (2, 3, 1, 0))


@pytest.fixture(params=[".safetensors", ".npz", ".pth"])
def weights_file(request, tmp_path):
    state = _state()
    path = tmp_path / f"model{request.param}"
    if request.param == ".safetensors":
        save_file(dict(state), path)
    elif request.param == ".npz":
        np.savez(path, **state)
    else:
        torch = pytest.importorskip("torch", reason="writing a .pth reference needs torch")
        torch.save(OrderedDict((k, torch.from_numpy(v)) for k, v in state.items()), path)
    return path, state


@pytest.mark.parametrize("layer", ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv1.weight"])
def test_read_kernel_matches_transposed_weight(weights_file, layer):
    path, state = weights_file
    kernel = read_kernel(path, layer)
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, _hwio(state[layer.removesuffix(".weight") + ".weight"]))


def test_read_kernel_unknown_layer_names_closest(weights_file):
    path, _ = weights_file
    with pytest.raises(ValueError, match="not found") as info:
        read_kernel(path, "layer1.0.conv")
    closest = str(info.value).split("closest: ")[1].split(")")[0].split(", ")
    assert "layer1.0.conv1" in closest and "conv1" not in closest
    assert "3 4-D conv weights" in str(info.value)


def test_read_kernel_rejects_non_conv(weights_file):
    with pytest.raises(ValueError, match="not a 2-D convolution"):
        read_kernel(weights_file[0], "fc")


def test_read_kernel_missing_file_and_suffix(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_kernel(tmp_path / "nope.safetensors", "conv1")
    bad = tmp_path / "model.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="must be a .pth"):
        read_kernel(bad, "conv1")


def test_read_kernel_rejects_grouped(tmp_path):
    rng = np.random.default_rng(2)
    state = OrderedDict(
        [
            ("stem.weight", rng.standard_normal((16, 1, 3, 3)).astype(np.float32)),  # grayscale stem: fine
            ("block.conv1.weight", rng.standard_normal((16, 16, 1, 1)).astype(np.float32)),
            ("block.bn1.running_mean", np.zeros(16, np.float32)),
            ("block.conv2.weight", rng.standard_normal((16, 4, 3, 3)).astype(np.float32)),  # groups=4
            ("dw.weight", rng.standard_normal((16, 1, 3, 3)).astype(np.float32)),  # depthwise
        ]
    )
    path = tmp_path / "grouped.npz"
    np.savez(path, **state)
    np.testing.assert_array_equal(read_kernel(path, "stem"), _hwio(state["stem.weight"]))
    with pytest.raises(ValueError, match="groups=4"):
        read_kernel(path, "block.conv2")
    with pytest.raises(ValueError, match="groups=16"):
        read_kernel(path, "dw")
    with pytest.raises(ValueError, match="groups=2"):
        read_kernel(path, "block.conv1", groups=2)
    np.testing.assert_array_equal(read_kernel(path, "dw", groups=1), _hwio(state["dw.weight"]))


# --------------------------------------------------------------------------- layer_study


def _kernel(shape=(3, 3, 8, 8)):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _np_metrics(tensor, factors):
    """float64 numpy: relative error, sorted intensities, balanced eq. 5 of a CP model."""
    a, b, c = (np.asarray(f, np.float64) for f in factors)
    full = np.einsum("ir,jr,kr->ijk", a, b, c)
    err = np.linalg.norm(tensor - full) / np.linalg.norm(tensor)
    norms = np.stack([np.linalg.norm(f, axis=0) for f in (a, b, c)])
    inten = np.prod(norms, axis=0)
    # balanced: every vector has norm inten^(1/3), so each of the 3 pair products is inten^(4/3)
    sens = 3 * np.sum(inten ** (4 / 3))
    return err, np.sort(inten)[::-1], sens


@pytest.fixture(scope="module")
def study():
    return layer_study(_kernel(), RANKS, key=KEY, als_kwargs=ALS, epc_kwargs=EPC, name="toy")


def test_study_bound_and_lower_sensitivity(study):
    assert study.ranks == RANKS and study.kernel_shape == (3, 3, 8, 8) and study.method == "cpd-epc"
    for r in study.records:
        assert r.rel_error_epc <= r.rel_error_cpd * (1 + 1e-4)
        assert r.sensitivity_epc <= r.sensitivity_cpd * (1 + 1e-5)
        assert r.intensity_sq_epc < r.intensity_sq_cpd
        assert len(r.intensities_cpd) == len(r.intensities_epc) == r.rank
        assert list(r.intensities_epc) == sorted(r.intensities_epc, reverse=True)
    # EPC lowers the sensitivity of a random kernel's CPD noticeably at some rank (Fig. 2 right)
    assert min(r.sensitivity_epc / r.sensitivity_cpd for r in study.records) < 0.9


def test_study_matches_fresh_cpd_epc(study):
    x = np.asarray(jaxcpd.kernel_to_tensor(_kernel()), np.float64)
    for r in study.records:
        fresh = jaxcpd.cpd_epc(x, r.rank, key=jax.random.fold_in(KEY, r.rank), als_kwargs=ALS, epc_kwargs=EPC)
        for res, tag in ((fresh.cpd, "cpd"), (fresh.epc, "epc")):
            err, inten, sens = _np_metrics(x, res.factors)
            np.testing.assert_allclose(getattr(r, f"rel_error_{tag}"), err, rtol=1e-4)
            np.testing.assert_allclose(getattr(r, f"intensities_{tag}"), inten, rtol=1e-4)
            np.testing.assert_allclose(getattr(r, f"intensity_sq_{tag}"), np.sum(inten**2), rtol=1e-4)
            np.testing.assert_allclose(getattr(r, f"sensitivity_{tag}"), sens, rtol=1e-4)


def test_tkd_study_matches_tkd_cpd(tmp_path, capsys):
    # Tucker ranks (8, 8) give a (9, 8, 8) core, the shape of the cpd-epc study: compiled code is reused
    kernel = _kernel((3, 3, 10, 12))
    st = layer_study(
        kernel,
        4,
        method="tkd-cpd-epc",
        tucker_ranks=(8, 8),
        key=KEY,
        als_kwargs=ALS,
        epc_kwargs=EPC,
        progress=True,
    )
    assert capsys.readouterr().err.startswith("rank 4: error ")
    (r,) = st.records
    x = np.asarray(jaxcpd.kernel_to_tensor(kernel), np.float64)
    ref = jaxcpd.tkd_cpd(x, (8, 8), 4, key=jax.random.fold_in(KEY, 4), als_kwargs=ALS, epc_kwargs=EPC)
    u, v = np.asarray(ref.U), np.asarray(ref.V)
    np.testing.assert_allclose(st.tucker_rel_error, float(ref.tucker_rel_error), rtol=1e-4)
    np.testing.assert_allclose(r.rel_error_epc, float(ref.rel_error), rtol=1e-4)
    for factors, tag in ((ref.cpd_factors, "cpd"), (ref.factors, "epc")):
        a, b, c = (np.asarray(f) for f in factors)
        err, inten, sens = _np_metrics(x, (a, u @ b, v @ c))
        np.testing.assert_allclose(getattr(r, f"rel_error_{tag}"), err, rtol=1e-4)
        np.testing.assert_allclose(getattr(r, f"intensities_{tag}"), inten, rtol=1e-4)
        np.testing.assert_allclose(getattr(r, f"sensitivity_{tag}"), sens, rtol=1e-4)
    assert r.rel_error_cpd >= st.tucker_rel_error
    assert r.rel_error_epc <= r.rel_error_cpd * (1 + 1e-4)
    assert r.sensitivity_epc <= r.sensitivity_cpd * (1 + 1e-5)
    # one rank: a single intensity panel; the Tucker error is reported
    paths = st.save(tmp_path)
    assert LayerStudy.load(tmp_path) == st
    assert "Tucker-2 relative error" in paths["markdown"].read_text()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ranks": 0}, "positive ints"),
        ({"ranks": ()}, "non-empty"),
        ({"ranks": (4, 2.5)}, "positive ints"),
        ({"ranks": (True,)}, "positive ints"),
        ({"kernel": np.ones((9, 8, 8))}, "ndim=4"),
        ({"kernel": np.full((3, 3, 2, 2), np.nan)}, "NaN"),
        ({"kernel": np.zeros((3, 3, 2, 2))}, "all zeros"),
        ({"method": "tucker"}, "method must be"),
        ({"method": "tkd-cpd-epc"}, "needs tucker_ranks"),
        ({"method": "tkd-cpd-epc", "tucker_ranks": 3}, "pair"),
        ({"tucker_ranks": (2, 2)}, "only applies"),
    ],
)
def test_layer_study_bad_input(kwargs, match):
    args = {"kernel": np.ones((3, 3, 2, 2)), "ranks": (2,), **kwargs}
    with pytest.raises(ValueError, match=match):
        layer_study(args.pop("kernel"), args.pop("ranks"), **args)


def test_save_load_round_trip(study, tmp_path):
    paths = study.save(tmp_path / "out")
    assert set(paths) == {"json", "intensities", "vs_rank", "markdown"}
    assert {p.name for p in paths.values()} == {"study.json", "intensities.png", "vs_rank.png", "study.md"}
    loaded = LayerStudy.load(tmp_path / "out")
    assert loaded == study
    assert LayerStudy.load(paths["json"]) == study
    for name in ("intensities", "vs_rank"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(paths[name])
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    table = paths["markdown"].read_text().splitlines()
    assert "| rank | CPD error | EPC error | eq.3 CPD -> EPC | eq.5 CPD -> EPC |" in table
    rows = [line for line in table if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split("|")[1]) for line in rows] == list(RANKS)
    with pytest.raises(FileNotFoundError):
        LayerStudy.load(tmp_path / "missing")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a jaxcpd.layer_study"):
        LayerStudy.load(tmp_path / "bad.json")
