"""Pure, jitted tensor math: Kruskal metrics, CPD-ALS, EPC, Tucker-2, SVD.

This subpackage imports nothing from the rest of jaxcpd.
"""

from .cp_als import CPResult, cp_als
from .kernel import kernel_to_tensor, tensor_to_kernel
from .kruskal import cp_balance, cp_intensities, cp_reconstruct, cp_sensitivity

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
