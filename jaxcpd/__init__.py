"""jaxcpd: stable low-rank tensor decompositions for compressing CNNs in JAX/Flax.

Implements Phan et al., "Stable Low-rank Tensor Decomposition for Compression of
Convolutional Neural Network", ECCV 2020.
"""

from .decomp import (
    CPResult,
    cp_als,
    cp_balance,
    cp_intensities,
    cp_reconstruct,
    cp_sensitivity,
    kernel_to_tensor,
    tensor_to_kernel,
)

__version__ = "0.1.0"

__all__ = [
    "CPResult",
    "cp_als",
    "cp_balance",
    "cp_intensities",
    "cp_reconstruct",
    "cp_sensitivity",
    "kernel_to_tensor",
    "tensor_to_kernel",
]
