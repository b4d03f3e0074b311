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

The study itself is :func:`jaxcpd.experiments.layer_study.layer_study` (also behind
``jaxcpd decompose``); this script only trains the model and names the outputs.

Writes ``scripts/results/fig_epc.png``, ``fig_epc.md`` (the numbers) and ``fig_epc.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from flax import nnx

import jaxcpd
from jaxcpd.experiments.layer_study import layer_study, parse_ranks, plot_fig2
from jaxcpd.train import SCRATCH_CONFIG


def trained_kernel(steps: int, layer: str):
    model = jaxcpd.models.resnet18(10, small_input=True, in_channels=1, rngs=nnx.Rngs(0))
    train = jaxcpd.data.load("mnist-subset", "train", batch_size=32)
    test = jaxcpd.data.load("mnist-subset", "test", batch_size=250)
    config = dataclasses.replace(
        SCRATCH_CONFIG, steps=steps, eval_every=steps, learning_rate=0.05, progress=True
    )
    model, _ = jaxcpd.train.train_from_scratch(model, train, test, config)
    top1 = jaxcpd.train.evaluate(model, test)["top1"]
    return np.asarray(jaxcpd.models.get_submodule(model, layer).kernel[...]), top1


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=150, help="training steps (batch 32)")
    parser.add_argument("--layer", default="layer4.1.conv1")
    parser.add_argument("--ranks", default="10,50,100,200,300,500", help="e.g. 10,50,100 or 10:500:10")
    parser.add_argument("--out", type=Path, default=Path("scripts/results"))
    args = parser.parse_args()
    ranks = parse_ranks(args.ranks)
    kernel, top1 = trained_kernel(args.steps, args.layer)
    study = layer_study(
        kernel,
        ranks,
        key=jax.random.PRNGKey(0),
        als_kwargs={"max_iter": 300, "tol": 1e-6},
        epc_kwargs={"max_iter": 100, "tol": 1e-5},
        progress=True,
        name=args.layer,
    )
    shape = "x".join(map(str, kernel.shape))
    about = (
        f"Kernel: {args.layer} ({shape}) of a small-input ResNet-18 trained {args.steps} steps on the "
        f"embedded MNIST subset (top-1 {top1:.3f})."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot_fig2(
        study,
        args.out / "fig_epc.png",
        title=f"Trained kernel: small-input ResNet-18, {args.steps} steps on MNIST subset (top-1 {top1:.3f})",
    )
    seconds = ", ".join(f"{r.rank}: {r.seconds:.0f}" for r in study.records)
    text = f"{about}\n\n{study.markdown()}\nSeconds per rank (ALS + EPC): {seconds}.\n"
    (args.out / "fig_epc.md").write_text(text)
    record = {"top1": float(top1), **study.to_json()}
    (args.out / "fig_epc.json").write_text(json.dumps(record, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
