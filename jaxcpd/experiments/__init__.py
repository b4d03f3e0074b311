"""Experiments of the paper (Phan et al., ECCV 2020) built on the library.

``rank_search``: the per-layer accuracy-driven rank search of section 3 and its Fig. 6 plot.
"""

from .rank_search import (
    Probe,
    RankSearchResult,
    plot_rank_search,
    rank_bounds,
    rank_search,
    single_layer_probe,
)

__all__ = [
    "Probe",
    "RankSearchResult",
    "plot_rank_search",
    "rank_bounds",
    "rank_search",
    "single_layer_probe",
]
