"""The ``jaxcpd`` command: the demo end to end on a tiny budget, the other commands, and its errors."""

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import jaxcpd
from jaxcpd import cli
from jaxcpd.cli import EXIT_ERROR, main
from jaxcpd.experiments import RunSummary

METHODS = ("cpd", "cpd-epc", "tkd-cpd-epc")
DEMO_YAML = str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``jaxcpd demo --quick`` once for the module (in this process, sharing its compilations)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["demo", "--quick", "--no-progress", "--output", str(out)])
    assert code == 0, stderr.getvalue()[-3000:]
    return out, stdout.getvalue()


def test_demo_writes_its_report_files(demo_run):
    out, _ = demo_run
    for name in ("config.yaml", "summary.json", "summary.md", "summary.png", "baseline/model/model.json"):
        assert (out / name).is_file(), name
    for method in METHODS:
        for name in ("report.md", "report.json", "report.csv", "model/model.json", "finetune/metrics.jsonl"):
            assert (out / method / name).is_file(), f"{method}/{name}"
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_prints_the_table_and_where_its_outputs_are(demo_run):
    out, stdout = demo_run
    assert "| method | params | FLOPs | top-1 before FT | top-1 after FT |" in stdout
    for method in ("dense", *METHODS):
        assert f"| {method} |" in stdout
    assert f"outputs in {out.resolve()}/" in stdout


def test_demo_summary_agrees_with_the_method_reports(demo_run):
    out, _ = demo_run
    summary = RunSummary.load(out)
    assert [m.method for m in summary.methods] == list(METHODS)
    for m in summary.methods:
        report = jaxcpd.CompressionReport.load_json(out / m.method / "report.json")
        assert m.layers == len(report.layers) == 2  # the quick budget's two layers
        assert m.flops_reduction == pytest.approx(report.flops_reduction)
        assert m.params_reduction == pytest.approx(report.params_reduction)
        assert m.mean_sensitivity == pytest.approx(np.mean([r.sensitivity_after for r in report.layers]))
        assert m.speedup == pytest.approx(summary.forward_ms / m.forward_ms)
        assert 0 <= m.top1 <= 1 and 0 <= m.top1_before_finetune <= 1
    by_name = {m.method: m for m in summary.methods}
    # EPC never raises the sensitivity of the CPD it starts from (eq. 5).
    assert by_name["cpd-epc"].mean_sensitivity <= by_name["cpd-epc"].mean_sensitivity_cpd
    assert by_name["cpd"].mean_sensitivity == by_name["cpd"].mean_sensitivity_cpd


def test_evaluate_reproduces_the_accuracies_of_the_saved_models(demo_run, capsys):
    out, _ = demo_run
    assert main(["evaluate", str(out)]) == 0
    rows = {
        line.split("|")[1].strip(): float(line.split("|")[2])
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(f"| {out}")
    }
    summary = RunSummary.load(out)
    assert rows[str(out / "baseline" / "model")] == pytest.approx(summary.top1, abs=1e-6)
    for m in summary.methods:
        assert rows[str(out / m.method / "model")] == pytest.approx(m.top1, abs=1e-6)


def test_report_re_renders_tables_and_plots(demo_run, tmp_path, capsys):
    out, _ = demo_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("model", "finetune", "train"))
    for name in ("summary.md", "summary.png", "cpd/report.md", "cpd/report.csv"):
        (copy / name).unlink()
    assert main(["report", str(copy)]) == 0
    assert (copy / "summary.md").read_text() == (out / "summary.md").read_text()
    assert (copy / "cpd" / "report.md").read_text() == (out / "cpd" / "report.md").read_text()
    assert (copy / "summary.png").is_file() and (copy / "cpd" / "report.csv").is_file()
    assert "| cpd-epc |" in capsys.readouterr().out


def test_compress_runs_a_config_file(tmp_path, capsys):
    """The demo config file through ``jaxcpd compress`` with overrides: one method, no baseline training.

    Same width, layer and ALS/EPC settings as the quick demo, so the decomposition's compilations are shared.
    """
    out = tmp_path / "run"
    overrides = [
        "baseline.train=false",
        "model.width=8",
        "compression.methods=[cpd-epc]",
        "compression.layers=[layer3.0.conv2, layer3.1.conv1]",
        "compression.als={max_iter: 20}",
        "compression.epc={max_iter: 5}",
        "finetune.steps=1",
        "speed.repeats=0",
    ]
    argv = ["compress", DEMO_YAML, "--no-progress", "--output", str(out)]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 0, capsys.readouterr().err
    summary = RunSummary.load(out)
    assert [m.method for m in summary.methods] == ["cpd-epc"] and summary.methods[0].layers == 2
    assert summary.methods[0].speedup is None and summary.baseline_seconds == 0
    saved = json.loads((out / "cpd-epc" / "model" / "model.json").read_text())
    assert list(saved["plan"]) == ["layer3.0.conv2", "layer3.1.conv1"] and saved["arch"]["width"] == 8


def test_decompose_writes_the_single_layer_study(tmp_path, capsys):
    weights = tmp_path / "w.npz"
    kernel = np.random.default_rng(0).standard_normal((6, 5, 3, 3)).astype(np.float32)  # OIHW
    np.savez(weights, **{"layer1.0.conv1.weight": kernel})
    out = tmp_path / "study"
    argv = [
        "decompose",
        str(weights),
        "--layer",
        "layer1.0.conv1",
        "--ranks",
        "2,3",
        "--output",
        str(out),
        "--als-iters",
        "20",
        "--epc-iters",
        "5",
        "--no-progress",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    for name in ("study.json", "study.md", "intensities.png", "vs_rank.png"):
        assert (out / name).is_file()
    assert "| 2 |" in capsys.readouterr().out


def run_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "no/such.yaml"], "config file not found: no/such.yaml"),
        (
            ["compress", DEMO_YAML, "--set", "finetune.stepz=3"],
            "unknown key 'stepz' in finetune; valid keys: optimizer,",
        ),
        (["compress", DEMO_YAML, "--set", "steps"], "expected key=value"),
        (["demo", "--set", "compression.methods=[magic]"], "compression.methods: must be one of"),
        (["decompose", "missing.pth", "--layer", "conv1"], "missing.pth"),
        (["decompose", "w.npz", "--layer", "conv1", "--ranks", "5:1"], "5:1"),
        (["evaluate", "."], "not a saved jaxcpd model"),
        (["report", "."], "is not a jaxcpd run directory"),
    ],
)
def test_errors_are_one_line_with_a_non_zero_exit(argv, message, capsys):
    code, err = run_error(argv, capsys)
    assert code == EXIT_ERROR
    assert len(err.splitlines()) == 1 and err.startswith("jaxcpd: error: ")
    assert message in err
    assert "Traceback" not in err


def test_unknown_layer_in_a_weights_file_names_the_closest(tmp_path, capsys):
    weights = tmp_path / "w.npz"
    np.savez(weights, **{"layer1.0.conv1.weight": np.zeros((4, 4, 3, 3), np.float32)})
    code, err = run_error(["decompose", str(weights), "--layer", "layer1.0.conv2"], capsys)
    assert code == EXIT_ERROR and "layer1.0.conv1" in err and len(err.splitlines()) == 1


def test_debug_shows_the_traceback():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        main(["--debug", "compress", "no/such.yaml"])


def test_commands_run_with_one_blas_thread(monkeypatch):
    # LAPACK threads slow the R x R solves of ALS/EPC down next to XLA's pool; the
    # command runs with one BLAS thread and gives the setting back afterwards.
    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    seen = []
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(cli, "cmd_report", lambda args: seen.append(blas_threads()))
    before = blas_threads()
    assert main(["report", "anywhere"]) == 0
    assert seen[0] and all(n == 1 for n in seen[0])
    assert blas_threads() == before


def test_usage_errors_exit_non_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code != 0
    with pytest.raises(SystemExit):
        main([])
    assert "usage: jaxcpd" in capsys.readouterr().err
