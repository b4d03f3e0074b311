"""Experiments of the paper (Phan et al., ECCV 2020) built on the library, behind the ``jaxcpd`` command.

- ``config``: YAML experiment configs with ``--set`` overrides (``configs/*.yaml``).
- ``pipeline``: baseline, plan, compress, fine-tune, measure; writes a run directory.
- ``summary``: the method comparison table and re-rendering of a run's reports and plots.
- ``demo``: the ``jaxcpd demo`` experiment on the embedded MNIST digits.
- ``rank_search``: the per-layer accuracy-driven rank search of section 3 and its Fig. 6 plot.
- ``layer_study``: single-layer CPD vs CPD-EPC over ranks (Fig. 2 / Fig. 4 right).
"""

from .config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    save_config,
)
from .demo import DEMO, QUICK, demo_config
from .layer_study import LayerStudy, RankRecord, layer_study, parse_ranks, read_kernel
from .pipeline import forward_ms, make_plan, run_experiment
from .rank_search import (
    Probe,
    RankSearchResult,
    plot_rank_search,
    rank_bounds,
    rank_search,
    single_layer_probe,
)
from .summary import MethodResult, RunSummary, render_run

__all__ = [
    "DEMO",
    "QUICK",
    "ConfigError",
    "ExperimentConfig",
    "LayerStudy",
    "MethodResult",
    "Probe",
    "RankRecord",
    "RankSearchResult",
    "RunSummary",
    "apply_overrides",
    "config_from_dict",
    "demo_config",
    "forward_ms",
    "layer_study",
    "load_config",
    "make_plan",
    "parse_ranks",
    "plot_rank_search",
    "rank_bounds",
    "rank_search",
    "read_kernel",
    "render_run",
    "run_experiment",
    "save_config",
    "single_layer_probe",
]
