"""The torch-convention layers against torch's own functions."""

import jax.numpy as jnp
import numpy as np
import pytest
from models_testing import import_torch, nchw_to_nhwc

from jaxcpd.models._layers import MaxPool2d, adaptive_avg_pool2d, check_positive_int


@pytest.mark.parametrize(
    ("size", "out"), [((7, 7), (7, 7)), ((2, 3), (7, 7)), ((13, 9), (7, 7)), ((5, 1), (2, 3))]
)
def test_adaptive_avg_pool_matches_torch(size, out):
    torch, _ = import_torch()
    x = np.random.default_rng(0).standard_normal((2, 4, *size)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), out).numpy()
    got = adaptive_avg_pool2d(jnp.asarray(nchw_to_nhwc(x)), out)
    np.testing.assert_allclose(np.asarray(got), nchw_to_nhwc(expected), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), [(3, 2, 1, 9), (3, 2, 1, 8), (2, 2, 0, 7)])
def test_max_pool_matches_torch(kernel, stride, padding, size):
    torch, _ = import_torch()
    # all-negative input: zero padding instead of -inf padding would change the result
    x = -np.abs(np.random.default_rng(1).standard_normal((1, 3, size, size))).astype(np.float32) - 1
    expected = torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, stride, padding).numpy()
    got = MaxPool2d(kernel, stride=stride, padding=padding)(jnp.asarray(nchw_to_nhwc(x)))
    np.testing.assert_array_equal(np.asarray(got), nchw_to_nhwc(expected))


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "4", None])
def test_check_positive_int_rejects(bad):
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        check_positive_int(bad, "num_classes")


def test_check_positive_int_accepts_numpy_ints():
    assert check_positive_int(np.int64(10), "n") == 10
