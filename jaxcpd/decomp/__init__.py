"""Pure, jitted tensor math: Kruskal metrics, CPD-ALS, EPC, Tucker-2, SVD.

This subpackage imports nothing from the rest of jaxcpd.
"""

from .cp_als import CPResult, cp_als
from .epc import EPCHistory, EPCResult, epc
from .hybrid import CPDEPCResult, TKDCPResult, cpd_epc, tkd_cpd
from .kernel import kernel_to_tensor, tensor_to_kernel
from .kruskal import cp_balance, cp_intensities, cp_reconstruct, cp_sensitivity
from .svd import truncated_svd
from .tucker import Tucker2Result, tucker2
from .vbmf import evbmf_rank

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
    "evbmf_rank",
    "kernel_to_tensor",
    "tensor_to_kernel",
    "tkd_cpd",
    "truncated_svd",
    "tucker2",
]
