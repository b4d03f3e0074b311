"""The ``jaxcpd`` command line: demo, compress, decompose, evaluate, report.

Errors are printed as one line (``jaxcpd: error: ...``) with exit status 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits

EXIT_ERROR = 2


def _enable_compile_cache() -> None:
    """Persistent XLA compilation cache, so a second run of a command skips most compiles.

    ``JAX_COMPILATION_CACHE_DIR`` wins when set; else ``JAXCPD_COMPILE_CACHE`` (empty
    disables it), default ``~/.cache/jaxcpd/xla``.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    cache = os.environ.get("JAXCPD_COMPILE_CACHE", str(Path.home() / ".cache" / "jaxcpd" / "xla"))
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def _blas_threads():
    """One BLAS thread while a command runs, unless ``OPENBLAS_NUM_THREADS`` is set.

    ALS and EPC factor R x R Gram matrices with LAPACK (OpenBLAS), whose threads fight
    XLA's own pool on two cores: an EPC sweep at 9x64x64, R = 500 took 39.9 ms with the
    default threads and 24.9 ms with one (``docs/performance.md``).
    """
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _finish(run_dir: Path, summary) -> None:
    print()
    print(summary.table())
    print()
    print(
        f"outputs in {run_dir.resolve()}/ (summary.md, summary.json, summary.png, <method>/report.md, models)"
    )


def cmd_demo(args) -> None:
    from .experiments import demo_config, run_experiment

    overrides = list(args.set)
    if args.output:
        overrides.append(f"output={args.output}")
    config = demo_config(quick=args.quick, overrides=overrides)
    print(
        f"jaxcpd demo: {config.model.arch} (width {config.model.width}) on {config.data.name}, "
        f"methods {', '.join(config.compression.methods)}, output {config.run_dir}"
    )
    summary = run_experiment(config, progress=not args.no_progress)
    _finish(config.run_dir, summary)


def cmd_compress(args) -> None:
    from .experiments import load_config, run_experiment

    overrides = list(args.set)
    if args.output:
        overrides.append(f"output={args.output}")
    config = load_config(args.config, overrides)
    summary = run_experiment(config, progress=not args.no_progress)
    _finish(config.run_dir, summary)


def cmd_decompose(args) -> None:
    from .experiments import layer_study, parse_ranks, read_kernel

    ranks = parse_ranks(args.ranks)
    tucker_ranks = None
    if args.tucker_ranks:
        parts = args.tucker_ranks.split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--tucker-ranks: expected R1,R2 (e.g. 64,64), got {args.tucker_ranks!r}")
        tucker_ranks = tuple(int(p) for p in parts)
    kernel = read_kernel(args.weights, args.layer)
    out = Path(args.output or Path("runs") / f"decompose-{args.layer}-{args.method}")
    print(f"jaxcpd decompose: {args.layer} {kernel.shape} (HWIO), {args.method}, {len(ranks)} ranks -> {out}")
    als = {"max_iter": args.als_iters} if args.als_iters else None
    epc = {"max_iter": args.epc_iters} if args.epc_iters else None
    study = layer_study(
        kernel,
        ranks,
        method=args.method,
        tucker_ranks=tucker_ranks,
        als_kwargs=als,
        epc_kwargs=epc,
        progress=not args.no_progress,
        name=args.layer,
    )
    paths = study.save(out)
    print(study.markdown())
    print(f"\noutputs: {', '.join(str(p) for p in paths.values())}")


def cmd_evaluate(args) -> None:
    from . import data
    from .compression import load_compressed
    from .train import evaluate

    path = Path(args.model)
    targets = [path]
    if (path / "summary.json").is_file():  # a run directory: every saved model in it
        targets = sorted(p.parent for p in path.glob("*/model/model.json"))
    elif not (path / "model.json").is_file():
        raise FileNotFoundError(f"{path}: not a saved jaxcpd model (no model.json) nor a run directory")
    batches = data.load(
        args.data, args.split, batch_size=args.batch_size, data_dir=args.data_dir, augment=False
    )
    print("| model | top-1 | top-5 | loss |\n|---|---|---|---|")
    for target in targets:
        metrics = evaluate(load_compressed(target), batches)
        print(f"| {target} | {metrics['top1']:.4f} | {metrics['top5']:.4f} | {metrics['loss']:.4f} |")


def cmd_report(args) -> None:
    from .experiments import render_run
    from .experiments.summary import RunSummary

    written = render_run(args.run_dir)
    print(RunSummary.load(args.run_dir).table())
    print(f"\nwrote {', '.join(str(p) for p in written.values())}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxcpd",
        description="Compress CNNs with stable CP decompositions (CPD-EPC, TKD-CPD-EPC; Phan et al. 2020).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_run_options(p):
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. finetune.steps=100 (repeatable)",
        )
        p.add_argument("--output", help="run directory (default: the config's output)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser(
        "demo",
        help="train, compress with CPD / CPD-EPC / TKD-CPD-EPC, fine-tune, compare "
        "(embedded MNIST digits, CPU, a few minutes)",
    )
    p.add_argument("--quick", action="store_true", help="tiny budget (a few steps, two layers): a smoke test")
    with_run_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("compress", help="run an experiment config (configs/*.yaml)")
    p.add_argument("config", help="YAML experiment config")
    with_run_options(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser(
        "decompose", help="single-layer study: CPD vs CPD-EPC over ranks (paper Fig. 2 / Fig. 4)"
    )
    p.add_argument("weights", help="torchvision-style state dict: .pth, .pt, .safetensors or .npz")
    p.add_argument("--layer", required=True, help="conv name, e.g. layer4.1.conv1")
    p.add_argument("--method", default="cpd-epc", choices=("cpd-epc", "tkd-cpd-epc"))
    p.add_argument("--ranks", default="10:500:10", help="start:stop:step, a list 10,20,50 or one rank")
    p.add_argument("--tucker-ranks", help="R1,R2 for tkd-cpd-epc")
    p.add_argument("--als-iters", type=int, help="ALS sweeps (default 500)")
    p.add_argument("--epc-iters", type=int, help="EPC sweeps (default 200)")
    p.add_argument("--output", help="output directory (default runs/decompose-LAYER-METHOD)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_decompose)

    p = sub.add_parser("evaluate", help="top-1/top-5 of a saved model (or of every model of a run directory)")
    p.add_argument("model", help="a saved model directory (RUN/<method>/model) or a run directory")
    p.add_argument("--data", default="mnist-subset", help="data set name (default mnist-subset)")
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--data-dir", help="tfds data directory")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="re-render a run directory's tables and plots")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``jaxcpd`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _enable_compile_cache()
        with _blas_threads():
            args.func(args)
    except (ValueError, FileNotFoundError, KeyError, OSError) as error:
        if args.debug:
            raise
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        message = message or type(error).__name__
        print(f"jaxcpd: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("jaxcpd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
