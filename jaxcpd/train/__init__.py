"""Fine-tuning and evaluation: data, the training loop, checkpoints and the device mesh.

A flat public API in the style of optax; the implementation modules are
``data``, ``transforms``, ``config``, ``optim``, ``metrics``, ``mesh``,
``checkpoint``, ``evaluation`` and ``loop``.
"""

from .checkpoint import Checkpointer, CheckpointError, fingerprint
from .config import OPTIMIZERS, SCHEDULES, SCRATCH_CONFIG, TrainConfig
from .data import DATASETS, Batches, DatasetInfo, DatasetNotPreparedError, dataset_info, load
from .evaluation import eval_step, evaluate
from .loop import TrainData, finetune, train_from_scratch, train_step
from .mesh import DATA_AXIS, initialize_distributed, make_mesh, replicate, shard_batch
from .metrics import JsonlWriter, batch_metrics, summarize
from .optim import current_learning_rate, make_optimizer, trainable_filter

__all__ = [
    "DATASETS",
    "DATA_AXIS",
    "OPTIMIZERS",
    "SCHEDULES",
    "SCRATCH_CONFIG",
    "Batches",
    "CheckpointError",
    "Checkpointer",
    "DatasetInfo",
    "DatasetNotPreparedError",
    "JsonlWriter",
    "TrainConfig",
    "TrainData",
    "batch_metrics",
    "current_learning_rate",
    "dataset_info",
    "eval_step",
    "evaluate",
    "finetune",
    "fingerprint",
    "initialize_distributed",
    "load",
    "make_mesh",
    "make_optimizer",
    "replicate",
    "shard_batch",
    "summarize",
    "train_from_scratch",
    "train_step",
    "trainable_filter",
]
