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


def degenerate_cpd(seed=3, big=100.0, gap=1e-3):
    """A rank-5 tensor plus noise, and a rank-7 CPD of it with two huge, nearly cancelling terms.

    The two extra terms share their B and C columns, so every Hadamard Gram of the
    CPD is singular.
    """
    rng = np.random.default_rng(seed)
    a, b, c = random_factors((9, 16, 16), 5, seed=seed)
    x = full((a, b, c)) + 0.05 * rng.standard_normal((9, 16, 16))
    u, v, w = (rng.standard_normal((n, 1)) for n in (9, 16, 16))
    u2 = u + gap * rng.standard_normal((9, 1))
    a7 = np.hstack([a, big * u, -big * u2])
    return x.astype(np.float32), (a7.astype(np.float32), np.hstack([b, v, v]), np.hstack([c, w, w]))
