"""Random CP tensors for the decomposition tests."""

import numpy as np


def random_factors(shape, rank, seed=0, congruence=0.0):
    """Gaussian factors; ``congruence`` sets the cosine between any two columns of each factor."""
    rng = np.random.default_rng(seed)
    factors = []
    for n in shape:
        f = rng.standard_normal((n, rank))
        if congruence:
            q, _ = np.linalg.qr(rng.standard_normal((n, rank)))
            gram = np.full((rank, rank), congruence) + (1 - congruence) * np.eye(rank)
            f = q @ np.linalg.cholesky(gram).T
        factors.append(f.astype(np.float32))
    return tuple(factors)


def full(factors):
    """Dense tensor of a CP model, in float64 numpy (an independent reference)."""
    f64 = [np.asarray(f, np.float64) for f in factors]
    letters = "abcdefgh"[: len(f64)]
    return np.einsum(",".join(f"{c}r" for c in letters) + "->" + letters, *f64)
