"""Compression transform: plans, model surgery, per-layer reports, saved compressed models."""

from .builders import candidate_layers, plan_for_flops, plan_from_vbmf, plan_uniform
from .checkpoint import apply_structure, build_model, load_compressed, save_compressed
from .plan import METHODS, LayerPlan, load_plan, plan_from_dict, plan_to_dict, save_plan
from .report import CompressionReport, LayerReport
from .surgery import compress, default_input_shape

__all__ = [
    "METHODS",
    "CompressionReport",
    "LayerPlan",
    "LayerReport",
    "apply_structure",
    "build_model",
    "candidate_layers",
    "compress",
    "default_input_shape",
    "load_compressed",
    "load_plan",
    "plan_for_flops",
    "plan_from_dict",
    "plan_from_vbmf",
    "plan_to_dict",
    "plan_uniform",
    "save_compressed",
    "save_plan",
]
