"""Per-layer decomposition: vmapped batches equal one-at-a-time runs, methods share the compiled
programs, errors match reconstructions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compression_testing import normal, rel_err

import jaxcpd
from jaxcpd import LayerPlan
from jaxcpd.compression import decompose
from jaxcpd.compression.decompose import decompose_batch, layer_tensor

ALS = {"max_iter": 10}
EPC = {"max_iter": 3}


def _tensors(count, shape):
    return jnp.asarray(np.stack([normal(40 + i, shape) for i in range(count)]).astype(np.float32))


@pytest.mark.parametrize(
    "entry", [LayerPlan("cpd-epc", rank=4), LayerPlan("tkd-cpd-epc", rank=3, ranks=(4, 5))], ids=str
)
def test_vmapped_batch_equals_one_at_a_time(entry):
    tensors = _tensors(3, (9, 6, 7))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batched = decompose_batch(tensors, keys, entry, ALS, EPC)
    for i in range(3):
        (single,) = decompose_batch(tensors[i : i + 1], keys[i : i + 1], entry, ALS, EPC)
        assert batched[i].keys() == single.keys()
        for got, want in zip(jax.tree.leaves(batched[i]), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_big_layers_run_one_after_the_other_with_the_same_results(monkeypatch):
    """Above VMAP_MAX_WORK layers are decomposed one by one: same results as the vmapped batch."""
    entry = LayerPlan("cpd-epc", rank=4)
    tensors = _tensors(2, (9, 6, 7))
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    batched = decompose_batch(tensors, keys, entry, ALS, EPC)
    monkeypatch.setattr(decompose, "VMAP_MAX_WORK", 0)
    mapped = decompose_batch(tensors, keys, entry, ALS, EPC)
    for got, want in zip(jax.tree.leaves(mapped), jax.tree.leaves(batched), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert isinstance(mapped[0]["rel_error"], float) and isinstance(mapped[0]["factors"][0], jax.Array)


@pytest.mark.parametrize("count", [1, 2], ids=["one at a time", "vmapped"])
def test_methods_share_the_decomposition_programs(programs_compiled, count):
    """Layers run the public functions' own programs (with their compiler options), not one
    program per group: CPD-EPC after CPD on the same layers compiles EPC and nothing of ALS,
    and plain ``cp_als`` on the same shape then compiles nothing at all."""
    tensors = _tensors(count, (9, 5, 4))  # a shape no other test uses
    keys = jax.random.split(jax.random.PRNGKey(5), count)
    decompose_batch(tensors, keys, LayerPlan("cpd", rank=3), ALS, EPC)
    with programs_compiled() as names:
        decompose_batch(tensors, keys, LayerPlan("cpd-epc", rank=3), ALS, EPC)
    assert "jit(_epc_call)" in names
    assert not [n for n in names if "_cp_als" in n or "_initial_factors" in n or "_cp_metrics" in n], names
    if count == 1:
        with programs_compiled() as names:
            jaxcpd.cp_als(tensors[0], 3, key=keys[0], **ALS)
        assert not [n for n in names if "_cp_als" in n or "_initial_factors" in n], names


@pytest.mark.parametrize("entry", [LayerPlan("cpd-epc", rank=3), LayerPlan("svd", error_bound=0.5)], ids=str)
def test_non_finite_tensor_is_rejected(entry):
    tensors = np.array(_tensors(2, (9, 6, 7) if entry.method != "svd" else (6, 7)))
    tensors[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"tensors\[1\] contains NaN or Inf"):
        decompose_batch(tensors, jax.random.split(jax.random.PRNGKey(0), 2), entry, ALS, EPC)


def _reconstruct(out, method):
    if method == "svd":
        return out["U"] @ out["V"].T
    if method == "tucker2":
        return np.einsum("pab,sa,tb->pst", out["core"], out["U"], out["V"])
    a, b, c = out["factors"]
    if method.startswith("tkd"):
        b, c = out["U"] @ b, out["V"] @ c
    return np.einsum("pr,sr,tr->pst", a, b, c)


@pytest.mark.parametrize(
    "entry",
    [
        LayerPlan("cpd", rank=5),
        LayerPlan("cpd-epc", rank=5),
        LayerPlan("tkd-cpd", rank=4, ranks=(5, 6)),
        LayerPlan("tkd-cpd-epc", rank=4, error_bound=0.6),
        LayerPlan("tucker2", ranks=(3, 4)),
        LayerPlan("tucker2", error_bound=0.5),
        LayerPlan("svd", rank=3),
        LayerPlan("svd", error_bound=0.5),
    ],
    ids=str,
)
def test_reported_error_is_that_of_the_returned_factors(entry):
    kernel = normal(50, (1, 1, 6, 7) if entry.method == "svd" else (3, 3, 6, 7)).astype(np.float32)
    tensor = layer_tensor(jnp.asarray(kernel), entry.method)
    assert tensor.shape == ((6, 7) if entry.method == "svd" else (9, 6, 7))
    (out,) = decompose_batch(tensor[None], jax.random.PRNGKey(2)[None], entry, ALS, EPC)
    assert out["rel_error"] == pytest.approx(rel_err(_reconstruct(out, entry.method), tensor), abs=1e-5)
    if entry.error_bound is not None and not entry.method.startswith("tkd"):
        assert out["rel_error"] <= entry.error_bound + 1e-6
    if entry.method.endswith("epc"):  # EPC keeps the ALS error and lowers the sensitivity
        assert out["sensitivity_after"] <= out["sensitivity_before"] * (1 + 1e-5)
