"""Accuracy of the decomposition core on whatever device JAX runs on (GPU/TPU check).

Run:  python scripts/check_accelerator.py [--device-default-products] [--out FILE.json]

On NVIDIA GPUs since Ampere JAX computes float32 matrix products in TensorFloat-32 by
default, and on TPUs in bfloat16 passes (about 1e-3 relative error per product).
jaxcpd's decomposition programs override that (``jaxcpd/decomp/_precision.py``). This
script prints, on the default device:

  * the relative error of a float32 1024x1024 product at the device's default
    precision and at ``Precision.HIGHEST``, against float64;
  * the checks the test suite makes on CPU: exact rank-20 (9,64,64) and rank-3
    (4,5,6,7) tensors recovered by ``cp_als`` (goal < 1e-5), EPC's error bound after
    every sweep on a rank-60 CPD of a Gaussian (9,32,32) tensor (goal <= 1 + 1e-5),
    ``tucker2`` on an exact multilinear-rank tensor, ``truncated_svd`` against the
    Eckart-Young error, and ``tkd_cpd``'s reported error against a float64 recomputation.

``--device-default-products`` runs the same checks with the override switched off,
i.e. what the decompositions computed before it. On CPU both are the same: XLA:CPU
always multiplies float32 in full.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxcpd
import jaxcpd.decomp._precision as precision


def rel(approx, exact):
    exact = np.asarray(exact, np.float64)
    return float(np.linalg.norm(np.asarray(approx, np.float64) - exact) / np.linalg.norm(exact))


def full(factors):
    """Dense CP tensor in float64 numpy."""
    f64 = [np.asarray(f, np.float64) for f in factors]
    letters = "abcdefgh"[: len(f64)]
    return np.einsum(",".join(f"{c}r" for c in letters) + "->" + letters, *f64)


def product_errors(rng):
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    exact = a.astype(np.float64) @ a.astype(np.float64)
    out = {}
    for level in (None, "highest"):
        with jax.default_matmul_precision(level):
            out[f"float32 product, precision={level or 'device default'}"] = rel(
                jax.jit(lambda m: m @ m)(jnp.asarray(a)), exact
            )
    return out


def test_tensors(rng):
    """The checks' inputs: exact CP tensors, a Gaussian tensor, an exact Tucker-2 tensor, a matrix."""
    exact20 = full([rng.standard_normal((n, 20)).astype(np.float32) for n in (9, 64, 64)])
    exact4way = full([rng.standard_normal((n, 3)).astype(np.float32) for n in (4, 5, 6, 7)])
    gauss = rng.standard_normal((9, 64, 64)).astype(np.float32)
    core = rng.standard_normal((9, 16, 12))
    u = np.linalg.qr(rng.standard_normal((64, 16)))[0]
    v = np.linalg.qr(rng.standard_normal((64, 12)))[0]
    tucker_exact = np.einsum("irs,jr,ks->ijk", core, u, v).astype(np.float32)
    m = rng.standard_normal((256, 128)).astype(np.float32)
    return exact20.astype(np.float32), exact4way.astype(np.float32), gauss, tucker_exact, m


def decomposition_checks(exact20, exact4way, gauss, tucker_exact, m):
    s = np.linalg.svd(m.astype(np.float64), compute_uv=False)
    start = time.perf_counter()
    out = {
        "cp_als exact rank 20 (9,64,64): rel error (goal < 1e-5)": float(
            jaxcpd.cp_als(exact20, 20, max_iter=3000, tol=1e-9).rel_error
        ),
        "cp_als exact rank 3 (4,5,6,7): rel error (goal < 1e-5)": float(
            jaxcpd.cp_als(exact4way, 3, max_iter=3000, tol=1e-9).rel_error
        ),
    }
    small = gauss[:, :32, :32]
    cpd = jaxcpd.cp_als(small, 60, max_iter=50)
    res = jaxcpd.epc(small, cpd.factors, max_iter=50)
    errors = np.asarray(res.history.rel_error)[: int(res.n_iter) + 1]
    out["epc rank 60 (9,32,32): max error over the sweeps / bound (goal <= 1 + 1e-5)"] = float(
        errors.max() / float(cpd.rel_error)
    )
    out["epc: sensitivity of the balanced input -> output"] = [
        float(jaxcpd.cp_sensitivity(jaxcpd.cp_balance(cpd.factors))),
        float(res.sensitivity),
    ]
    out["tucker2 exact ranks (16,12) of (9,64,64): rel error"] = float(
        jaxcpd.tucker2(tucker_exact, (16, 12)).rel_error
    )
    left, right = jaxcpd.truncated_svd(m, 32)
    eckart_young = float(np.sqrt(np.sum(s[32:] ** 2)) / np.linalg.norm(s))
    out["truncated_svd rank 32: error / Eckart-Young error - 1"] = (
        rel(np.asarray(left, np.float64) @ np.asarray(right, np.float64).T, m) / eckart_young - 1
    )
    tk = jaxcpd.tkd_cpd(gauss, (16, 16), 30, als_kwargs={"max_iter": 100}, epc_kwargs={"max_iter": 20})
    a, b, c = (np.asarray(f, np.float64) for f in tk.factors)
    recomputed = rel(full((a, np.asarray(tk.U, np.float64) @ b, np.asarray(tk.V, np.float64) @ c)), gauss)
    out["tkd_cpd: reported rel error / float64 recomputation - 1"] = float(tk.rel_error) / recomputed - 1
    out["seconds (compilation included)"] = time.perf_counter() - start
    return out


def main():
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument(
        "--device-default-products",
        action="store_true",
        help="also run the checks with the full-float32 override switched off",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the results here (JSON)")
    args = parser.parse_args()
    device = jax.devices()[0]
    results = {"device": f"{device.platform} ({device.device_kind}), jax {jax.__version__}"}
    rng = np.random.default_rng(0)
    results.update(product_errors(rng))
    tensors = test_tensors(rng)
    results["jaxcpd (full float32 products)"] = decomposition_checks(*tensors)
    if args.device_default_products:
        # The override is a context manager around each program's trace; a no-op in its
        # place traces the programs as they were before it, and clear_caches drops the
        # programs already compiled with it.
        precision.jax = types.SimpleNamespace(default_matmul_precision=lambda _: contextlib.nullcontext())
        jax.clear_caches()
        results["products at the device default"] = decomposition_checks(*tensors)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
