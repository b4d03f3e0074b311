"""Training and evaluation throughput of the small-input ResNet-18 on the embedded data, dense vs CP.

Both models train with the real loop (``jaxcpd.train.finetune``) on the same data
in the same process. The compressed copy replaces every 3x3 convolution but the
stem by a CP block (1x1, depthwise 3x3, 1x1) of rank ``--rank-ratio`` times its
output channels, from a short CPD-ALS of the dense kernel; accuracy is not the
point here, speed is. Throughput excludes the first logging window (compilation)
and evaluation. The machine's matmul rate is printed for context.

    python scripts/bench_train.py                     # 30 steps of 64 images
    python scripts/bench_train.py --steps 60 --batch-size 128 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcpd import cp_als, kernel_to_tensor
from jaxcpd.models import named_convs, resnet18, set_submodule
from jaxcpd.nn import CPConv, conv_config, count_flops, count_params
from jaxcpd.train import TrainConfig, evaluate, finetune, load


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matmul rate of this machine, GFLOP/s."""
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul(a).block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def cp_compressed(model: nnx.Module, rank_ratio: float, als_iters: int) -> nnx.Module:
    """Replaces every 3x3 conv except ``conv1`` of ``model`` by a CP block, in place."""
    for name, conv in list(named_convs(model)):
        if name == "conv1" or conv.kernel_size != (3, 3):
            continue
        rank = max(1, round(rank_ratio * conv.out_features))
        factors = cp_als(kernel_to_tensor(conv.kernel[...]), rank, max_iter=als_iters).factors
        set_submodule(model, name, CPConv.from_factors(factors, **conv_config(conv)))
    return model


def bench(name: str, model: nnx.Module, train, test, steps: int) -> dict:
    """Trains ``steps`` steps and evaluates twice; returns throughput and size."""
    window = max(1, steps // 3)
    config = TrainConfig(
        steps=steps, log_every=window, learning_rate=0.01, schedule="constant", progress=False
    )
    model, history = finetune(model, train, None, config)
    train_rates = [r["images_per_sec"] for r in history if r["kind"] == "train"][1:]  # first one compiles
    evaluate(model, test)  # compile
    start = time.perf_counter()
    result = evaluate(model, test)
    eval_rate = len(test) * test.batch_size / (time.perf_counter() - start)
    return {
        "model": name,
        "train_images_per_sec": sum(train_rates) / len(train_rates),
        "eval_images_per_sec": eval_rate,
        "macs_per_image": count_flops(model, (1, 28, 28, 1)),
        "params": count_params(model),
        "eval_top1_after_bench": result["top1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps per model (>= 3)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--rank-ratio", type=float, default=0.5, help="CP rank / output channels")
    parser.add_argument("--als-iters", type=int, default=25, help="CPD-ALS sweeps per layer")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be >= 3")

    train = load("mnist-subset", "train", batch_size=args.batch_size)
    test = load("mnist-subset", "test", batch_size=250)
    print(f"devices: {jax.devices()}  matmul: {matmul_gflops():.0f} GFLOP/s")
    def model():
        return resnet18(num_classes=10, small_input=True, in_channels=1, rngs=nnx.Rngs(0))

    dense, compressed = model(), cp_compressed(model(), args.rank_ratio, args.als_iters)
    rows = [bench("dense", dense, train, test, args.steps), bench("cp", compressed, train, test, args.steps)]
    print(f"{'model':6} {'train img/s':>12} {'eval img/s':>11} {'MMAC/img':>9} {'params':>10}")
    for row in rows:
        print(f"{row['model']:6} {row['train_images_per_sec']:12.1f} {row['eval_images_per_sec']:11.1f} "
              f"{row['macs_per_image'] / 1e6:9.1f} {row['params']:10d}")
    speedup = rows[1]["train_images_per_sec"] / rows[0]["train_images_per_sec"]
    print(f"cp / dense training throughput: {speedup:.2f}x")
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"args": vars(args), "results": rows}, file, indent=2)


if __name__ == "__main__":
    main()
