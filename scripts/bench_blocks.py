"""Speed of the CP and TKD-CPD blocks against the dense conv they replace (issue 4).

For every distinct 3x3 conv of ResNet-18 at its real feature-map size (224x224 input,
batch 16 by default) and CP ranks giving 2x, 4x and 8x fewer multiply-adds, times on
the default backend, in the same run and interleaved round by round:

- the dense ``nnx.Conv`` (padding 1, no bias, as in torchvision);
- the ``CPConv`` block (paper section 3, Fig. 3a);
- the ``TKDCPConv`` block with all five convs (Fig. 3c), Tucker ranks ``(S/4, T/4)``
  (halved while the CP rank would fall below them) and the CP rank that meets the
  same FLOP target.

Speedups are medians over rounds of the per-round ratio ``t_dense / t_block``;
"eff." is speedup / FLOP reduction (target >= 0.8; the paper realised 0.52 for
ResNet-50 on a Xeon). Prints a Markdown report; ``--out FILE`` also writes it there.
``--mode grad`` (or ``both``) times a training step's gradient (w.r.t. parameters and
input) instead of (or as well as) the forward pass.

    python scripts/bench_blocks.py --out scripts/results/bench_blocks.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _machine import cpu_description
from flax import nnx

from jaxcpd.nn import CPConv, TKDCPConv, count_flops, resolve_depthwise_impl

# (input size, in channels, out channels, stride) of ResNet-18's 3x3 convs.
RESNET18_3X3 = [(56, 64, 64, 1), (28, 128, 128, 1), (14, 256, 256, 1), (7, 512, 512, 1),
                (56, 64, 128, 2), (28, 128, 256, 2), (14, 256, 512, 2)]


def _abstract(build):
    return nnx.eval_shape(lambda: build(nnx.Rngs(0)))


def _flops(block, hw, s):
    return count_flops(block, (1, hw, hw, s))


def _rank_for(cost, budget):
    """Rank ``R`` with ``cost(R) ~= budget`` for a cost affine in ``R``."""
    one, two = cost(1), cost(2)
    return round((budget - (2 * one - two)) / (two - one))


def cp_rank(hw, s, t, stride, dense, target):
    """CP rank whose block costs ``dense / target`` multiply-adds."""
    def cost(rank):
        return _flops(_abstract(lambda rngs: CPConv(s, t, 3, rank, strides=stride, padding=1, use_bias=False,
                                                    rngs=rngs)), hw, s)

    return max(1, _rank_for(cost, dense / target))


def tkd_ranks(hw, s, t, stride, dense, target):
    """``(R1, R2, R)`` for a five-conv TKD-CPD block costing ``dense / target`` multiply-adds."""
    tucker = (s // 4, t // 4)
    while True:
        def cost(rank, tucker=tucker):
            return _flops(_abstract(lambda rngs: TKDCPConv(s, t, 3, rank, tucker, merge=False, strides=stride,
                                                           padding=1, use_bias=False, rngs=rngs)), hw, s)

        rank = _rank_for(cost, dense / target)
        if rank >= max(tucker) or min(tucker) == 1:
            return (*tucker, max(rank, 1))
        tucker = (max(tucker[0] // 2, 1), max(tucker[1] // 2, 1))


def compiled(module, x, grad):
    """Jitted ``module(x)``, or the gradient of ``sum(module(x)**2)``, over the module's state; warmed up."""
    graphdef, state = nnx.split(module)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    def loss(state, x):
        return jnp.sum(forward(state, x) ** 2)

    fn = jax.jit(jax.grad(loss, argnums=(0, 1)) if grad else forward)
    for _ in range(2):
        jax.block_until_ready(fn(state, x))
    return lambda: jax.block_until_ready(fn(state, x))


def interleaved_times(fns, rounds):
    """``rounds`` timings of every function, one call each per round, rotating the order."""
    times = {name: [] for name in fns}
    names = list(fns)
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def matmul_rate(n=2048, repeats=10):
    """Measured fp32 matmul rate in GFLOP/s (2 flops per multiply-add)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = min(_timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_shape(hw, s, t, stride, batch, targets, rounds, grad):
    rngs = nnx.Rngs(0)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((batch, hw, hw, s)), jnp.float32)
    dense = nnx.Conv(s, t, (3, 3), stride, padding=1, use_bias=False, rngs=rngs)
    dense_flops = _flops(dense, hw, s)
    fns, blocks = {"dense": compiled(dense, x, grad)}, {}
    for target in targets:
        rank = cp_rank(hw, s, t, stride, dense_flops, target)
        cp = CPConv(s, t, 3, rank, strides=stride, padding=1, use_bias=False, rngs=rngs)
        r1, r2, core_rank = tkd_ranks(hw, s, t, stride, dense_flops, target)
        tkd = TKDCPConv(s, t, 3, core_rank, (r1, r2), merge=False, strides=stride, padding=1, use_bias=False,
                        rngs=rngs)
        cases = ((f"cp{target}", cp, f"{rank}"), (f"tkd{target}", tkd, f"{r1},{r2},{core_rank}"))
        for name, block, ranks in cases:
            blocks[name] = (ranks, dense_flops / _flops(block, hw, s))
            fns[name] = compiled(block, x, grad)
    times = interleaved_times(fns, rounds)
    dense_ms = 1e3 * statistics.median(times["dense"])
    rows = []
    for target in targets:
        row = [f"{hw}x{hw} {s}->{t} s{stride}", f"{target}x", f"{dense_ms:.1f}"]
        for kind in ("cp", "tkd"):
            name = f"{kind}{target}"
            ranks, reduction = blocks[name]
            speedup = statistics.median(d / b for d, b in zip(times["dense"], times[name], strict=True))
            block_ms = 1e3 * statistics.median(times[name])
            efficiency = speedup / reduction
            row += [ranks, f"{reduction:.2f}", f"{block_ms:.2f}", f"{speedup:.2f}", f"{efficiency:.2f}"]
        rows.append((row, dense_flops * batch / (dense_ms / 1e3) / 1e9))
    return rows


HEADER = ["layer (input, S->T, stride)", "FLOP target", "dense ms",
          "CP R", "CP FLOP red.", "CP ms", "CP speedup", "CP eff.",
          "TKD R1,R2,R", "TKD FLOP red.", "TKD ms", "TKD speedup", "TKD eff."]


def _summary(kind, values):
    met = sum(v >= 0.8 for v in values)
    return (f"- {kind}: median eff. {statistics.median(values):.2f}, geometric mean "
            f"{float(np.exp(np.mean(np.log(values)))):.2f}, {met}/{len(values)} rows >= 0.8")


def table(shapes, args, grad):
    """Markdown section (title, table, summary) for the forward pass or the gradient."""
    what = "gradient of sum(y^2) w.r.t. parameters and input" if grad else "forward pass"
    lines = [f"## {what.capitalize()}", "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    cp_eff, tkd_eff, conv_rates = [], [], []
    for hw, s, t, stride in shapes:
        for row, conv_rate in bench_shape(hw, s, t, stride, args.batch, args.targets, args.rounds, grad):
            lines.append("| " + " | ".join(row) + " |")
            cp_eff.append(float(row[7]))
            tkd_eff.append(float(row[12]))
            conv_rates.append(conv_rate)
            print(lines[-1], flush=True)
    lines += ["", _summary("CP", cp_eff), _summary("TKD-CPD", tkd_eff)]
    if not grad:
        lines.append(f"- the dense conv ran at {2 * min(conv_rates):.0f}-{2 * max(conv_rates):.0f} GFLOP/s")
    return lines + [""]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--targets", default="2,4,8", help="FLOP reductions, comma separated")
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds per layer shape")
    parser.add_argument("--stride1-only", action="store_true", help="skip the three stride-2 convs")
    parser.add_argument("--mode", choices=("forward", "grad", "both"), default="forward",
                        help="time forward passes, gradients, or both")
    parser.add_argument("--out", help="also write the Markdown report to this file")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.targets = [int(v) for v in args.targets.split(",")]
    shapes = [shape for shape in RESNET18_3X3 if shape[3] == 1 or not args.stride1_only]

    rate = matmul_rate()
    load_start = os.getloadavg()[0]
    sections = []
    for grad in {"forward": (False,), "grad": (True,), "both": (False, True)}[args.mode]:
        sections += table(shapes, args, grad)
    report = "\n".join([
        "# Block benchmark: dense 3x3 conv vs CP vs TKD-CPD, ResNet-18 shapes",
        "",
        "`" + " ".join(["python scripts/bench_blocks.py", *argv]) + "`",
        "",
        f"- backend `{jax.default_backend()}` ({cpu_description()}), jax {jax.__version__}, "
        f"depthwise impl `{resolve_depthwise_impl()}`; "
        f"1-min load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end (shared machine)",
        f"- batch {args.batch}, {args.rounds} interleaved rounds per shape, float32, multiply-adds "
        f"counted by `jaxcpd.nn.count_flops`; measured fp32 matmul rate {rate:.0f} GFLOP/s",
        "- speedup = median over rounds of t_dense / t_block; eff. = speedup / FLOP reduction "
        "(target >= 0.8)",
        "",
        *sections,
    ])
    print(report)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
