"""Reproduce the paper's Fig. 2 on a trained 3x3x512x512 kernel: CPD vs CPD-EPC.

Run:  OPENBLAS_NUM_THREADS=1 python scripts/fig_epc.py [--steps 150] [--ranks 10,50,100,200,300,500]

No ImageNet weights can be downloaded here, so the kernel is ``layer4.1.conv1``
(shape 3x3x512x512, the layer of the paper's Fig. 2 and 4) of a small-input
ResNet-18 trained from scratch on the embedded MNIST subset for ``--steps`` steps.
For each rank it runs CP-ALS, then EPC at the ALS error, and plots

  left:  intensity ||a_r o b_r o c_r||_F of every rank-1 term, sorted, at the
         largest rank (Fig. 2 left);
  right: sum of squared intensities (eq. 3) and sensitivity (eq. 5) vs rank
         (Fig. 2 right).

Writes ``scripts/results/fig_epc.png`` and ``fig_epc.md`` (the numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np
from flax import nnx

import jaxcpd
from jaxcpd.train import SCRATCH_CONFIG

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def trained_kernel(steps: int, layer: str):
    model = jaxcpd.models.resnet18(10, small_input=True, in_channels=1, rngs=nnx.Rngs(0))
    train = jaxcpd.data.load("mnist-subset", "train", batch_size=32)
    test = jaxcpd.data.load("mnist-subset", "test", batch_size=250)
    config = dataclasses.replace(
        SCRATCH_CONFIG, steps=steps, eval_every=steps, learning_rate=0.05, progress=True
    )
    model, _ = jaxcpd.train.train_from_scratch(model, train, test, config)
    top1 = jaxcpd.train.evaluate(model, test)["top1"]
    return jaxcpd.models.get_submodule(model, layer).kernel[...], top1


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=150, help="training steps (batch 32)")
    parser.add_argument("--layer", default="layer4.1.conv1")
    parser.add_argument("--ranks", default="10,50,100,200,300,500")
    parser.add_argument("--out", type=Path, default=Path("scripts/results"))
    args = parser.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    kernel, top1 = trained_kernel(args.steps, args.layer)
    x = jaxcpd.kernel_to_tensor(kernel)
    rows, last = [], None
    for rank in ranks:
        start = time.perf_counter()
        res = jaxcpd.cpd_epc(
            x,
            rank,
            key=jax.random.PRNGKey(rank),
            als_kwargs={"max_iter": 300, "tol": 1e-6},
            epc_kwargs={"max_iter": 100, "tol": 1e-5},
        )
        cpd, epc = res.cpd.factors, res.epc.factors
        row = {
            "rank": rank,
            "rel_error_cpd": float(res.cpd.rel_error),
            "rel_error_epc": float(res.epc.rel_error),
            "sn_cpd": float(np.sum(np.asarray(jaxcpd.cp_intensities(cpd)) ** 2)),
            "sn_epc": float(np.sum(np.asarray(jaxcpd.cp_intensities(epc)) ** 2)),
            "ss_cpd": float(jaxcpd.cp_sensitivity(cpd)),
            "ss_epc": float(jaxcpd.cp_sensitivity(epc)),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        last = (
            np.sort(np.asarray(jaxcpd.cp_intensities(cpd)))[::-1],
            np.sort(np.asarray(jaxcpd.cp_intensities(epc)))[::-1],
        )
        print(row, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.semilogy(last[0], label="CPD")
    left.semilogy(last[1], label="CPD-EPC")
    left.set(xlabel="rank-1 term (sorted)", ylabel="intensity", title=f"{args.layer}, rank {ranks[-1]}")
    left.legend()
    r = [row["rank"] for row in rows]
    right.semilogy(r, [row["sn_cpd"] for row in rows], "o-", label="sum sq. intensity, CPD")
    right.semilogy(r, [row["sn_epc"] for row in rows], "o--", label="sum sq. intensity, CPD-EPC")
    right.semilogy(r, [row["ss_cpd"] for row in rows], "s-", label="sensitivity, CPD")
    right.semilogy(r, [row["ss_epc"] for row in rows], "s--", label="sensitivity, CPD-EPC")
    right.set(xlabel="CP rank", title="eq. 3 and eq. 5 vs rank")
    right.legend(fontsize=8)
    fig.suptitle(
        f"Trained kernel: small-input ResNet-18, {args.steps} steps on MNIST subset (top-1 {top1:.3f})"
    )
    fig.tight_layout()
    fig.savefig(args.out / "fig_epc.png", dpi=120)
    lines = [
        f"Kernel: {args.layer} (3x3x512x512) of a small-input ResNet-18 trained {args.steps} steps on the "
        f"embedded MNIST subset (top-1 {top1:.3f}).",
        "",
        "| rank | rel. error CPD | rel. error EPC | sum sq. intensity CPD | EPC "
        "| sensitivity CPD | EPC | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {w['rank']} | {w['rel_error_cpd']:.4f} | {w['rel_error_epc']:.4f} | {w['sn_cpd']:.4g} | "
        f"{w['sn_epc']:.4g} | {w['ss_cpd']:.4g} | {w['ss_epc']:.4g} | {w['seconds']:.0f} |"
        for w in rows
    ]
    (args.out / "fig_epc.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
