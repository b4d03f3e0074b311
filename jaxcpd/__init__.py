"""jaxcpd: stable low-rank tensor decompositions for compressing CNNs in JAX/Flax.

Implements Phan et al., "Stable Low-rank Tensor Decomposition for Compression of
Convolutional Neural Network", ECCV 2020.

The decomposition math and the compression transform are re-exported here
(``jaxcpd.cp_als``, ``jaxcpd.epc``, ``jaxcpd.compress``, ``jaxcpd.LayerPlan`` ...);
the layers, model ports, training loop and data sets live in ``jaxcpd.nn``,
``jaxcpd.models``, ``jaxcpd.train`` and ``jaxcpd.data``. ``jaxcpd.compress`` is the
transform function; its module is ``jaxcpd.compression``.
"""

from . import data, models, nn, train
from .compression import (
    CompressionReport,
    LayerPlan,
    LayerReport,
    compress,
    load_compressed,
    load_plan,
    plan_for_flops,
    plan_from_vbmf,
    plan_uniform,
    save_compressed,
    save_plan,
)
from .decomp import (
    CPDEPCResult,
    CPResult,
    EPCHistory,
    EPCResult,
    TKDCPResult,
    Tucker2Result,
    cp_als,
    cp_balance,
    cp_intensities,
    cp_reconstruct,
    cp_sensitivity,
    cpd_epc,
    epc,
    kernel_to_tensor,
    tensor_to_kernel,
    tkd_cpd,
    truncated_svd,
    tucker2,
)

__version__ = "0.1.0"

__all__ = [
    "CPDEPCResult",
    "CompressionReport",
    "LayerPlan",
    "LayerReport",
    "CPResult",
    "EPCHistory",
    "EPCResult",
    "TKDCPResult",
    "Tucker2Result",
    "cp_als",
    "cp_balance",
    "cp_intensities",
    "cp_reconstruct",
    "cp_sensitivity",
    "compress",
    "cpd_epc",
    "data",
    "epc",
    "kernel_to_tensor",
    "load_compressed",
    "load_plan",
    "models",
    "nn",
    "plan_for_flops",
    "plan_from_vbmf",
    "plan_uniform",
    "save_compressed",
    "save_plan",
    "tensor_to_kernel",
    "tkd_cpd",
    "train",
    "truncated_svd",
    "tucker2",
]
