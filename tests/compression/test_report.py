"""CompressionReport: per-layer numbers recomputed from the blocks, table/JSON/CSV, concrete plans."""

import csv
import io

import numpy as np
import pytest
from compression_testing import TinyNet, rel_err
from flax import nnx

import jaxcpd
from jaxcpd import CompressionReport, LayerPlan
from jaxcpd.compression import apply_structure
from jaxcpd.models import get_submodule


def _np_sensitivity(factors):
    """Eq. 5: sum_r |a_r|^2|b_r|^2 + |b_r|^2|c_r|^2 + |a_r|^2|c_r|^2, in float64 NumPy."""
    a, b, c = (np.sum(np.asarray(f, np.float64) ** 2, axis=0) for f in factors)
    return float(np.sum(a * b + b * c + a * c))


def _np_max_intensity(factors):
    a, b, c = (np.linalg.norm(np.asarray(f, np.float64), axis=0) for f in factors)
    return float(np.max(a * b * c))


@pytest.mark.parametrize("case", ["compressed_third", "lossless"])
def test_kernel_errors_equal_the_error_of_each_blocks_dense_kernel(case, request):
    compressed = request.getfixturevalue(case)
    recomputed = {}
    for row in compressed.report.layers:
        original = get_submodule(compressed.original, row.name).kernel[...]
        block = get_submodule(compressed.model, row.name)
        recomputed[row.name] = rel_err(block.dense_kernel(), original)
        assert row.rel_error == pytest.approx(recomputed[row.name], abs=2e-6), row.name
    if case == "compressed_third":  # rank ratio 1/3 of random kernels: large errors (measured ~0.66-0.74)
        assert all(0.5 < e < 0.9 for e in recomputed.values()), recomputed


def test_sensitivity_and_intensity_columns_are_those_of_the_blocks(compressed_third):
    rows = [r for r in compressed_third.report.layers if r.method == "cpd-epc"]
    assert len(rows) == 5
    for row in rows:
        factors = get_submodule(compressed_third.model, row.name).factors()
        assert row.sensitivity_after == pytest.approx(_np_sensitivity(factors), rel=1e-4)
        assert row.max_intensity_after == pytest.approx(_np_max_intensity(factors), rel=1e-4)
        # EPC lowers the sensitivity of the ALS result at the same error (eq. 10).
        assert row.sensitivity_after < row.sensitivity_before
    for row in compressed_third.report.layers:
        if row.method == "svd":
            assert row.sensitivity_before is row.sensitivity_after is row.max_intensity_after is None


def test_layers_decomposed_together_share_their_time(compressed_third):
    layer1 = [r.seconds for r in compressed_third.report.layers if r.name.startswith("layer1.")]
    assert len(layer1) == 4 and len(set(layer1)) == 1 and layer1[0] > 0


def test_table_lists_every_layer_and_the_totals(compressed_third):
    report = compressed_third.report
    lines = report.table().splitlines()
    assert lines[0].startswith("| layer | kernel | method | ranks | rel. error |")
    rows = [line for line in lines[2:] if line.startswith("|")]
    assert [row.split("|")[1].strip() for row in rows] == [r.name for r in report.layers]
    first = rows[0].split("|")
    assert first[2].strip() == "3x3x64x64" and first[3].strip() == "cpd-epc" and first[4].strip() == "90"
    assert f"{report.layers[0].rel_error:.4f}" in first[5]
    assert f"({report.params_reduction:.2f}x)" in lines[-1]
    assert f"({report.flops_reduction:.2f}x)" in lines[-1]
    assert str(report) == report.table()
    assert report.params_reduction == report.params_before / report.params_after
    assert report.flops_reduction == report.flops_before / report.flops_after


@pytest.mark.parametrize("case", ["compressed_third", "lossless"])
def test_json_round_trip(case, request, tmp_path):
    report = request.getfixturevalue(case).report
    path = report.save_json(tmp_path / "report.json")
    assert CompressionReport.load_json(path) == report


def test_csv_rows(compressed_third, tmp_path):
    report = compressed_third.report
    path = report.save_csv(tmp_path / "report.csv")
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["name"] for r in rows] == [r.name for r in report.layers]
    for got, want in zip(rows, report.layers, strict=True):
        assert got["kernel_shape"] == "x".join(map(str, want.kernel_shape))
        assert float(got["rel_error"]) == want.rel_error
        assert int(got["params_after"]) == want.params_after and int(got["flops_after"]) == want.flops_after


def test_concrete_plan_resolves_error_bounds_to_the_built_ranks():
    net = TinyNet((8, 16, 24), rngs=nnx.Rngs(0))
    plan = {
        "stem": LayerPlan("tucker2", error_bound=0.3),
        "conv": LayerPlan("tkd-cpd-epc", rank=4, error_bound=0.4),
        "proj": LayerPlan("svd", error_bound=0.5),
        "fc": LayerPlan("svd", error_bound=0.5),
    }
    model, report = jaxcpd.compress(net, plan, progress=False, on_growth="ignore",
                                    als_kwargs={"max_iter": 5}, epc_kwargs={"max_iter": 2})
    concrete = report.concrete_plan()
    assert concrete["stem"] == LayerPlan("tucker2", ranks=model.stem.tucker_ranks)
    assert concrete["conv"] == LayerPlan("tkd-cpd-epc", rank=4, ranks=model.conv.tucker_ranks)
    assert concrete["proj"] == LayerPlan("svd", rank=model.proj.rank)
    assert concrete["fc"] == LayerPlan("svd", rank=model.fc.rank)
    for name in ("stem", "proj", "fc"):  # Tucker-2 and SVD meet their bounds
        assert report.layers[list(plan).index(name)].rel_error <= plan[name].error_bound + 1e-6
    # Rebuilding from the concrete plan gives the compressed model's structure.
    rebuilt = nnx.eval_shape(lambda: apply_structure(TinyNet((8, 16, 24), rngs=nnx.Rngs(1)), concrete))
    shapes = lambda m: [(p, v.shape) for p, v in nnx.to_flat_state(nnx.state(m))]  # noqa: E731
    assert shapes(rebuilt) == shapes(model)
