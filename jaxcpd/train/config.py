"""Training configuration as data: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import math

OPTIMIZERS = ("sgd", "momentum", "adamw")
SCHEDULES = ("constant", "cosine", "plateau")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are the paper's fine-tuning recipe (section 4).

    Phan et al. fine-tune with SGD, initial learning rate ``1e-3``, decayed by 0.1 at
    each loss plateau, weight decay ``1e-4``. The paper does not state a momentum;
    the default uses 0.9 (torchvision's reference recipe); ``optimizer="sgd"`` is plain SGD.

    Attributes:
      optimizer: ``"sgd"`` (plain), ``"momentum"`` (heavy ball, PyTorch-style coupled
        weight decay) or ``"adamw"`` (decoupled weight decay).
      learning_rate: initial (peak) learning rate.
      momentum: momentum of ``"momentum"``; beta1 of ``"adamw"``.
      weight_decay: L2 penalty (``"sgd"``, ``"momentum"``) or decoupled decay (``"adamw"``).
      schedule: ``"constant"``, ``"cosine"`` (to zero over the run) or ``"plateau"``.
      plateau_factor: multiplier applied to the learning rate at each plateau.
      plateau_patience: windows without improvement before a decay.
      plateau_window: training steps whose mean loss makes one plateau check;
        default one epoch.
      plateau_rtol: relative improvement of the windowed loss that counts as progress.
      epochs: length of the run in epochs of the training data (may be fractional).
      steps: length of the run in steps; overrides ``epochs`` when set.
      eval_every: steps between evaluations; default once per epoch.
      log_every: steps between training-metric records.
      run_dir: directory for ``checkpoints/`` and ``metrics.jsonl``; ``None`` keeps
        nothing on disk.
      checkpoint_every: steps between checkpoints; default ``eval_every``.
      keep_checkpoints: number of most recent checkpoints kept.
      resume: continue from the newest good checkpoint in ``run_dir`` if there is one.
      seed: seed of the data order and augmentation.
      trainable: torchvision-style name prefixes (``"layer4.1.conv1"``) of the only
        parameters to train; empty trains every parameter.
      progress: show a tqdm progress bar.
    """

    optimizer: str = "momentum"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "plateau"
    plateau_factor: float = 0.1
    plateau_patience: int = 2
    plateau_window: int | None = None
    plateau_rtol: float = 1e-4
    epochs: float = 1.0
    steps: int | None = None
    eval_every: int | None = None
    log_every: int = 50
    run_dir: str | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3
    resume: bool = False
    seed: int = 0
    trainable: tuple[str, ...] = ()
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.trainable, str):
            object.__setattr__(self, "trainable", (self.trainable,))
        else:
            object.__setattr__(self, "trainable", tuple(self.trainable))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _check(self.learning_rate > 0 and math.isfinite(self.learning_rate), "learning_rate", "> 0",
               self.learning_rate)
        _check(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        _check(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        _check(0 < self.plateau_factor < 1, "plateau_factor", "in (0, 1)", self.plateau_factor)
        _check(self.plateau_patience >= 0, "plateau_patience", ">= 0", self.plateau_patience)
        _check(self.plateau_rtol >= 0, "plateau_rtol", ">= 0", self.plateau_rtol)
        _check(self.epochs > 0, "epochs", "> 0", self.epochs)
        _check(self.log_every > 0, "log_every", "> 0", self.log_every)
        _check(self.keep_checkpoints > 0, "keep_checkpoints", "> 0", self.keep_checkpoints)
        _check(0 <= self.seed < 2**32, "seed", "in [0, 2**32)", self.seed)
        for name in ("plateau_window", "steps", "eval_every", "checkpoint_every"):
            value = getattr(self, name)
            _check(value is None or value > 0, name, "> 0 or None", value)
        if self.resume and self.run_dir is None:
            raise ValueError("resume: needs run_dir, the directory holding the checkpoints")
        if not all(isinstance(prefix, str) and prefix for prefix in self.trainable):
            raise ValueError(f"trainable: must be non-empty layer-name strings, got {self.trainable!r}")

    def total_steps(self, steps_per_epoch: int) -> int:
        """Length of the run in steps.

        Args:
          steps_per_epoch: steps in one epoch of the training data.

        Returns:
          ``steps`` if set, else ``ceil(epochs * steps_per_epoch)``.
        """
        return self.steps if self.steps is not None else math.ceil(self.epochs * steps_per_epoch)


def _check(ok: bool, name: str, allowed: str, value) -> None:
    if not ok:
        raise ValueError(f"{name}: must be {allowed}, got {value!r}")


SCRATCH_CONFIG = TrainConfig(
    optimizer="momentum", learning_rate=0.1, weight_decay=5e-4, schedule="cosine", epochs=30
)
"""A from-scratch recipe (SGD momentum 0.9, lr 0.1 cosine, weight decay 5e-4) for baselines."""
