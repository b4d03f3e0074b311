"""jaxcpd: stable low-rank tensor decompositions for compressing CNNs in JAX/Flax.

Implements Phan et al., "Stable Low-rank Tensor Decomposition for Compression of
Convolutional Neural Network", ECCV 2020.
"""

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
    "cpd_epc",
    "epc",
    "kernel_to_tensor",
    "tensor_to_kernel",
    "tkd_cpd",
    "truncated_svd",
    "tucker2",
]
