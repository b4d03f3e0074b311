"""Data sets for training and evaluation: ``jaxcpd.data.load`` and the data-set descriptions.

The implementation lives in :mod:`jaxcpd.train.data`; this module is its short public name.
"""

from .train.data import DATASETS, Batches, DatasetInfo, DatasetNotPreparedError, dataset_info, load

__all__ = ["DATASETS", "Batches", "DatasetInfo", "DatasetNotPreparedError", "dataset_info", "load"]
