"""Kernel initialisers drawn from flat power-of-two blocks (``jaxcpd/nn/_init.py``): bitwise
JAX's own initialisers, with one compiled draw per block size instead of one per shape."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcpd.nn import _init

# Conv (HWIO) and dense kernels: below, at and above the smallest block, across block sizes.
SHAPES = [(3, 3, 1, 8), (4, 256), (1, 1, 16, 64), (3, 3, 16, 32), (7, 7, 3, 64), (3, 3, 64, 128), (513, 1000)]
CASES = [
    (2.0, "fan_out", "normal"),
    (1.0, "fan_in", "truncated_normal"),
    (1.0 / 3.0, "fan_in", "uniform"),
    (0.5, "fan_avg", "normal"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[2]}")
def test_values_are_bitwise_those_of_jax_initialisers(case):
    assert jax.config.jax_threefry_partitionable
    ours, reference = _init.variance_scaling(*case), jax.nn.initializers.variance_scaling(*case)
    for i, shape in enumerate(SHAPES):
        key = jax.random.fold_in(jax.random.key(0), i)
        got, want = ours(key, shape, jnp.float32), reference(key, shape, jnp.float32)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_lecun_normal_is_flax_default_kernel_init():
    key = jax.random.key(1)
    np.testing.assert_array_equal(
        _init.lecun_normal()(key, (3, 3, 8, 24)), jax.nn.initializers.lecun_normal()(key, (3, 3, 8, 24))
    )


def test_kernels_above_the_largest_block_are_drawn_at_their_own_shape(monkeypatch):
    monkeypatch.setattr(_init, "_LARGEST_BLOCK", 64)
    key = jax.random.key(2)
    got = _init.variance_scaling(2.0, "fan_out", "normal")(key, (3, 3, 4, 5))
    want = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")(key, (3, 3, 4, 5))
    np.testing.assert_array_equal(got, want)


def test_shapes_in_one_block_share_the_compiled_draw():
    names = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name", "?"))

    init = _init.variance_scaling(2.0, "fan_out", "normal")
    init(jax.random.key(3), (3, 3, 37, 41))  # 13,653 entries: the 16,384 block
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for shape in [(3, 3, 40, 41), (1, 1, 100, 150), (5, 5, 20, 30)]:  # 14,760, 15,000, 15,000
            init(jax.random.key(4), shape)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not [n for n in names if "normal" in n], names


@pytest.mark.parametrize(
    ("args", "match"),
    [(("fan_up", "normal"), "mode"), (("fan_in", "cauchy"), "distribution")],
)
def test_bad_options_are_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        _init.variance_scaling(1.0, *args)


def test_a_vector_shape_is_rejected():
    with pytest.raises(ValueError, match="input and an output axis"):
        _init.variance_scaling(1.0, "fan_in", "normal")(jax.random.key(0), (16,))
