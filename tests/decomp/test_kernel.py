import numpy as np
import pytest

import jaxcpd


def test_round_trip_and_layout():
    kernel = np.arange(3 * 3 * 4 * 5, dtype=np.float32).reshape(3, 3, 4, 5)
    k = jaxcpd.kernel_to_tensor(kernel)
    assert k.shape == (9, 4, 5)
    # spatial index p = h * D + w, channels untouched
    np.testing.assert_array_equal(k[1 * 3 + 2, 3, 4], kernel[1, 2, 3, 4])
    np.testing.assert_array_equal(jaxcpd.tensor_to_kernel(k, 3), kernel)
    np.testing.assert_array_equal(jaxcpd.tensor_to_kernel(k, (3, 3)), kernel)


def test_non_square_kernel():
    kernel = np.random.default_rng(0).standard_normal((1, 3, 2, 2))
    assert jaxcpd.tensor_to_kernel(jaxcpd.kernel_to_tensor(kernel), (1, 3)).shape == (1, 3, 2, 2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: jaxcpd.kernel_to_tensor(np.ones((3, 3, 4))), "kernel must have ndim=4"),
        (lambda: jaxcpd.kernel_to_tensor(np.full((1, 1, 2, 2), np.nan)), "kernel contains NaN"),
        (lambda: jaxcpd.tensor_to_kernel(np.ones((9, 2, 2)), 2), "needs 4"),
        (lambda: jaxcpd.tensor_to_kernel(np.ones((9, 2, 2)), 0), "kernel_size"),
        (lambda: jaxcpd.tensor_to_kernel(np.ones((9, 2, 2)), "3"), "kernel_size"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
