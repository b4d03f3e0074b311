"""Wall time to compress every conv of ResNet-18 / ResNet-50 with ``jaxcpd.compress``.

Run:  python scripts/bench_compress.py [--models resnet18,resnet50] [--out scripts/results/bench_compress.md]

For each model (random init, ``nnx.Rngs(0)``): the plan of a ``--target``-times FLOP
reduction at ImageNet input ``(1, 224, 224, 3)`` from ``jaxcpd.plan_for_flops`` with
``--method`` for the DxD convs (1x1 convs get SVD, the stem and the classifier are
kept: the default rules), then one call of ``jaxcpd.compress(model, plan, key=...,
progress=True)`` with its default ALS/EPC settings (``DEFAULT_ALS``, ``DEFAULT_EPC``).

Measured, all in the same process:
  * compress: wall time of the whole ``compress`` call (decompositions, host-side
    metrics, block construction, FLOP counting of both models);
  * compile: the part of it spent in JAX tracing, lowering and XLA compilation, summed
    from ``jax.monitoring`` duration events (nested traces of inner ``jit``s are
    counted once, by their outermost trace); run = compress - compile;
  * sum of per-layer seconds from the ``CompressionReport`` (layers of one vmapped batch
    share its time), its whole-model FLOP / parameter reductions, relative kernel
    errors and the sensitivity (eq. 5) of the CPD before and after EPC;
  * the float32 matmul rate of the machine, and the load average before and after.

``OPENBLAS_NUM_THREADS`` defaults to 1 here (set before JAX is imported), as in the
other benchmarks: the R x R Cholesky / eigh calls of ALS and EPC run much faster
without OpenBLAS threads competing with XLA's (DESIGN.md). Pass it explicitly to
measure another setting.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from _machine import cpu_description  # noqa: E402
from flax import nnx  # noqa: E402

import jaxcpd  # noqa: E402
from jaxcpd.compression.surgery import DEFAULT_ALS, DEFAULT_EPC  # noqa: E402

INPUT_SHAPE = (1, 224, 224, 3)
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


class CompileTimer:
    """Sums JAX's trace / lowering / compile duration events while ``active``.

    A trace event is recorded when its trace ends, and the traces of ``jit``s called
    inside another trace end first, nested in their parent's span; so a new trace
    span replaces the spans it contains, and each second is counted once.
    """

    def __init__(self):
        self.active = False
        self.compile = 0.0
        self._spans = []
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    @property
    def trace(self):
        return sum(end - start for start, end in self._spans)

    def _listen(self, event, duration, **_):
        if not self.active:
            return
        if event == TRACE_EVENT:
            end = time.perf_counter()
            start = end - duration
            self._spans = [s for s in self._spans if s[0] < start] + [(start, end)]
        elif event in COMPILE_EVENTS:
            self.compile += duration

    @contextlib.contextmanager
    def measure(self):
        self.compile = 0.0
        self._spans = []
        self.active = True
        try:
            yield self
        finally:
            self.active = False


def matmul_gflops(n=2048, repeats=5):
    """Measured float32 matmul rate (GFLOP/s), best of ``repeats``."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda m: m @ m)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def bench_model(arch, args, timer):
    """Plans and compresses one model; returns a dict of measurements."""
    model = getattr(jaxcpd.models, arch)(1000, rngs=nnx.Rngs(0))
    start = time.perf_counter()
    plan = jaxcpd.plan_for_flops(model, INPUT_SHAPE, args.target, args.method)
    plan_s = time.perf_counter() - start
    load_before = os.getloadavg()[0]
    with timer.measure():
        start = time.perf_counter()
        _, report = jaxcpd.compress(
            model, plan, key=jax.random.PRNGKey(args.seed), input_shape=INPUT_SHAPE, progress=True
        )
        total = time.perf_counter() - start
    rows = report.layers
    cp_rows = [r for r in rows if r.sensitivity_before is not None]
    groups = {}
    for r in rows:
        key = (r.method, r.kernel_shape, r.rank)
        groups.setdefault(key, []).append(r)
    return {
        "arch": arch,
        "plan_s": plan_s,
        "total_s": total,
        "trace_s": timer.trace,
        "compile_s": timer.compile,
        "layer_s": sum(r.seconds for r in rows),
        "flops_red": report.flops_reduction,
        "params_red": report.params_reduction,
        "n_layers": len(rows),
        "by_method": {m: sum(r.method == m for r in rows) for m in dict.fromkeys(r.method for r in rows)},
        "rel_error": _mean(r.rel_error for r in rows),
        "rel_error_cp": _mean(r.rel_error for r in cp_rows),
        "sens_before": _mean(r.sensitivity_before for r in cp_rows),
        "sens_after": _mean(r.sensitivity_after for r in cp_rows),
        "sens_drop": _mean(1 - r.sensitivity_after / r.sensitivity_before for r in cp_rows),
        "groups": groups,
        "load": (load_before, os.getloadavg()[0]),
    }


def summary_table(results):
    head = (
        "| model | layers (method) | compress s | of which trace + compile s | sum of layer s "
        "| FLOPs red. | params red. | mean rel. error (CP layers) | mean sensitivity CPD -> EPC "
        "| mean per-layer sensitivity drop |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        methods = ", ".join(f"{n} {m}" for m, n in r["by_method"].items())
        lines.append(
            f"| {r['arch']} | {r['n_layers']} ({methods}) | {r['total_s']:.1f} "
            f"| {r['trace_s']:.1f} + {r['compile_s']:.1f} | {r['layer_s']:.1f} "
            f"| {r['flops_red']:.2f}x | {r['params_red']:.2f}x "
            f"| {r['rel_error']:.3f} ({r['rel_error_cp']:.3f}) "
            f"| {r['sens_before']:.4g} -> {r['sens_after']:.4g} | {100 * r['sens_drop']:.1f} % |"
        )
    return lines


def group_table(r):
    lines = [
        f"### {r['arch']}: time per group of same-shape layers",
        "",
        "| method | kernel | rank | layers | s (batch) | share | mean rel. error |",
        "|---|---|---|---|---|---|---|",
    ]
    for (method, shape, rank), rows in sorted(
        r["groups"].items(), key=lambda kv: -sum(x.seconds for x in kv[1])
    ):
        seconds = sum(x.seconds for x in rows)
        lines.append(
            f"| {method} | {'x'.join(map(str, shape))} | {rank} | {len(rows)} | {seconds:.1f} "
            f"| {100 * seconds / r['layer_s']:.0f} % | {_mean(x.rel_error for x in rows):.3f} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet18,resnet50", help="comma separated jaxcpd.models names")
    parser.add_argument("--method", default="cpd-epc", help="method for the DxD convs")
    parser.add_argument("--target", type=float, default=3.0, help="whole-model FLOP reduction")
    parser.add_argument("--seed", type=int, default=0, help="seed of the compress key")
    parser.add_argument("--out", help="also write the Markdown report to this file")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    timer = CompileTimer()
    load_start = os.getloadavg()
    rate = matmul_gflops()
    results = []
    for arch in args.models.split(","):
        results.append(bench_model(arch.strip(), args, timer))
        r = results[-1]
        print(
            f"{arch}: compress {r['total_s']:.1f} s "
            f"(trace {r['trace_s']:.1f} s, compile {r['compile_s']:.1f} s)",
            file=sys.stderr,
        )
    load_end = os.getloadavg()
    loads = ", ".join(f"{r['arch']} {r['load'][0]:.1f} -> {r['load'][1]:.1f}" for r in results)
    lines = [
        f"# Compression time: whole networks, {args.method} at a {args.target:g}x FLOP reduction",
        "",
        "`" + " ".join(["python scripts/bench_compress.py", *argv]) + "`",
        "",
        f"- {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}; backend "
        f"`{jax.default_backend()}` ({cpu_description()}), "
        f"jax {jax.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; "
        f"measured fp32 matmul rate {rate:.0f} GFLOP/s",
        f"- load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in load_start)} at start, "
        f"{', '.join(f'{v:.1f}' for v in load_end)} at end; 1-min load around each compress call: {loads} "
        "(shared 2-core machine)",
        f"- random init (`nnx.Rngs(0)`), plan `plan_for_flops(model, {INPUT_SHAPE}, {args.target:g}, "
        f"{args.method!r})` (1x1 convs -> SVD; stem and fc kept), `compress(..., key=PRNGKey({args.seed}))` "
        f"with ALS {DEFAULT_ALS} and EPC {DEFAULT_EPC}",
        "- compress s: wall time of the `compress` call (decompositions, host-side metrics, block "
        "construction, FLOP counts); trace + compile: JAX tracing and XLA lowering/compilation inside it "
        "(`jax.monitoring` events); sum of layer s: `CompressionReport` per-layer seconds; sensitivity "
        "(eq. 5) over the CP layers",
        "",
        *summary_table(results),
        "",
    ]
    for r in results:
        lines += [*group_table(r), ""]
        lines.append(f"(planning with `plan_for_flops` took a further {r['plan_s']:.1f} s)")
        lines.append("")
    report = "\n".join(lines)
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
