"""Experiment configuration: one YAML file per experiment, with ``--set key=value`` overrides.

A config has the sections below; every key has a default, so a file names only
what differs (``configs/*.yaml`` are the paper's experiments and the demo)::

    name: resnet18-imagenet
    seed: 0
    output: runs/resnet18-imagenet
    model:       {arch, num_classes, small_input, in_channels, width, batch_norm, weights}
    data:        {name, data_dir, batch_size, eval_batch_size, train_split, eval_split}
    baseline:    {train: false, ...TrainConfig fields}   # train the dense model first
    compression: {methods, strategy, target_reduction, rank_ratio, rank_scale, plan,
                  layers, include_first, include_fc, one_by_one, als, epc,
                  eps, search_steps, search_eval_batches, tucker_error_bound}
    finetune:    {...TrainConfig fields}
    speed:       {batch_size, repeats}

Unknown keys, wrong types and bad values raise :class:`ConfigError` (a
``ValueError``) naming the key and, for unknown keys, listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from ..compression.plan import METHODS
from ..train import TrainConfig
from ..train.data import DATASETS

STRATEGIES = ("flops", "uniform", "vbmf", "rank_search", "plan")
ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "vgg16")
COMPRESS_METHODS = tuple(m for m in METHODS if m not in ("keep", "svd"))


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network to compress.

    Attributes:
      arch: ``resnet18``, ``resnet34``, ``resnet50`` or ``vgg16``.
      num_classes: classifier size; default: the data set's.
      small_input: CIFAR-style ResNet stem for 28x28 / 32x32 inputs.
      in_channels: input channels; default: the data set's.
      width: ResNet base width (64 = torchvision).
      batch_norm: VGG-16 with batch norm.
      weights: torchvision state dict (``.pth``/``.pt``/``.safetensors``) or a model
        directory saved by jaxcpd (``save_compressed``); ``None`` starts from random
        weights (then train a baseline, see ``baseline.train``).
    """

    arch: str = "resnet18"
    num_classes: int | None = None
    small_input: bool = False
    in_channels: int | None = None
    width: int = 64
    batch_norm: bool = False
    weights: str | None = None

    def __post_init__(self):
        _choice(self.arch, ARCHITECTURES, "model.arch")
        if self.arch == "vgg16" and (self.small_input or self.width != 64):
            raise ConfigError("model.small_input / model.width: only for ResNets (model.arch is vgg16)")
        if self.arch != "vgg16" and self.batch_norm:
            raise ConfigError("model.batch_norm: only for vgg16")
        _positive(self.width, "model.width")
        for name in ("num_classes", "in_channels"):
            if getattr(self, name) is not None:
                _positive(getattr(self, name), f"model.{name}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data set (see :func:`jaxcpd.data.load`).

    Attributes:
      name: ``mnist-subset`` (embedded), ``cifar10``, ``cifar100`` or ``imagenet2012``.
      data_dir: tfds data directory.
      batch_size: global training batch.
      eval_batch_size: global evaluation batch.
      train_split, eval_split: split names (tfds slicing allowed for tfds data sets).
    """

    name: str = "mnist-subset"
    data_dir: str | None = None
    batch_size: int = 64
    eval_batch_size: int = 250
    train_split: str = "train"
    eval_split: str = "test"

    def __post_init__(self):
        _choice(self.name, DATASETS, "data.name")
        _positive(self.batch_size, "data.batch_size")
        _positive(self.eval_batch_size, "data.eval_batch_size")


@dataclasses.dataclass(frozen=True)
class BaselineConfig(TrainConfig):
    """Training of the dense model before compression (``train: true``), e.g. for the demo.

    Attributes:
      train: train the dense model from its initial weights first.
      (others): :class:`jaxcpd.train.TrainConfig`.
    """

    train: bool = False


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
    """How each compared method's plan is made (paper section 3).

    Attributes:
      methods: methods compared, each compressing the planned ``D x D`` convs
        (``cpd``, ``cpd-epc``, ``tkd-cpd``, ``tkd-cpd-epc``, ``tucker2``).
      strategy: ``flops`` (uniform rank ratio reaching ``target_reduction`` of the
        whole model's FLOPs: the same budget for every method), ``uniform``
        (``rank_ratio`` of each layer's weights), ``vbmf`` (EVBMF rank estimates,
        scaled by ``rank_scale``), ``rank_search`` (per-layer binary search, section
        3, with ``eps`` and ``search_steps``) or ``plan`` (the file ``plan``).
      layers: restrict the plan to these layer names (empty: every candidate).
      include_first, include_fc, one_by_one: see :func:`jaxcpd.compression.candidate_layers`
        (``one_by_one: keep`` compresses only the ``D x D`` convs).
      als, epc: keyword arguments of ``cp_als`` / ``epc`` (e.g. ``{max_iter: 100}``).
      eps: rank search: largest accepted top-1 drop after single-layer fine-tuning.
      search_steps: rank search: fine-tuning steps per probe.
      search_eval_batches: rank search: evaluation batches per probe (``None``: all).
      tucker_error_bound: rank search with TKD methods: Tucker-2 ranks from this
        relative error bound (eq. 15-18).
    """

    methods: tuple[str, ...] = ("cpd-epc",)
    strategy: str = "flops"
    target_reduction: float = 3.0
    rank_ratio: float = 1 / 3
    rank_scale: float = 1.0
    plan: str | None = None
    layers: tuple[str, ...] = ()
    include_first: bool = False
    include_fc: bool = False
    one_by_one: str = "svd"
    als: dict = dataclasses.field(default_factory=dict)
    epc: dict = dataclasses.field(default_factory=dict)
    eps: float = 0.01
    search_steps: int = 100
    search_eval_batches: int | None = None
    tucker_error_bound: float = 0.3

    def __post_init__(self):
        if not self.methods:
            raise ConfigError("compression.methods: needs at least one method")
        for method in self.methods:
            _choice(method, COMPRESS_METHODS, "compression.methods")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"compression.methods: repeated method in {list(self.methods)}")
        _choice(self.strategy, STRATEGIES, "compression.strategy")
        _choice(self.one_by_one, ("svd", "keep"), "compression.one_by_one")
        if self.strategy == "plan" and self.plan is None:
            raise ConfigError("compression.plan: strategy 'plan' needs a plan file")
        if self.strategy == "plan" and len(self.methods) != 1:
            raise ConfigError("compression.methods: strategy 'plan' takes its methods from the plan file")
        if not self.target_reduction > 1:
            raise ConfigError(f"compression.target_reduction: must be > 1, got {self.target_reduction}")
        if not 0 < self.rank_ratio < 1:
            raise ConfigError(f"compression.rank_ratio: must be in (0, 1), got {self.rank_ratio}")
        if not self.rank_scale > 0:
            raise ConfigError(f"compression.rank_scale: must be > 0, got {self.rank_scale}")
        if not self.eps >= 0:
            raise ConfigError(f"compression.eps: must be >= 0, got {self.eps}")
        if not 0 < self.tucker_error_bound < 1:
            raise ConfigError(
                f"compression.tucker_error_bound: must be in (0, 1), got {self.tucker_error_bound}"
            )
        if self.search_steps < 0:
            raise ConfigError(f"compression.search_steps: must be >= 0, got {self.search_steps}")
        if self.search_eval_batches is not None:
            _positive(self.search_eval_batches, "compression.search_eval_batches")


@dataclasses.dataclass(frozen=True)
class SpeedConfig:
    """CPU/accelerator speed measurement of the compressed models (forward pass, eval mode).

    Attributes:
      batch_size: images per timed forward pass.
      repeats: timed repetitions (the median is reported); 0 skips the measurement.
    """

    batch_size: int = 32
    repeats: int = 5

    def __post_init__(self):
        _positive(self.batch_size, "speed.batch_size")
        if self.repeats < 0:
            raise ConfigError(f"speed.repeats: must be >= 0, got {self.repeats}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: model, data, baseline, compression, fine-tuning, output.

    Attributes:
      name: experiment name (titles, default output directory ``runs/<name>``).
      seed: seed of initialisation and decompositions.
      output: run directory.
      resume: continue an interrupted run in ``output`` (baseline and fine-tuning
        checkpoints, rank-search caches) instead of starting it afresh.
      model, data, baseline, compression, finetune, speed: the sections.
    """

    name: str = "experiment"
    seed: int = 0
    output: str | None = None
    resume: bool = False
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    compression: CompressionConfig = dataclasses.field(default_factory=CompressionConfig)
    finetune: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    speed: SpeedConfig = dataclasses.field(default_factory=SpeedConfig)

    @property
    def run_dir(self) -> Path:
        """The output directory (``output``, or ``runs/<name>``)."""
        return Path(self.output if self.output is not None else Path("runs") / self.name)

    def to_dict(self) -> dict:
        """Plain data (YAML/JSON-ready; tuples become lists), loadable by :func:`config_from_dict`."""
        data = _plain(dataclasses.asdict(self))
        for section in ("baseline", "finetune"):
            for key in _MANAGED:
                data[section].pop(key)
        return data


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _choice(value, allowed, key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: must be one of {', '.join(allowed)}, got {value!r}")


def _positive(value, key: str) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ConfigError(f"{key}: must be a positive int, got {value!r}")


def _convert(value, hint, key: str):
    """Checks and converts one YAML value to the field type ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (hint,) = [o for o in options if o is not type(None)]
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, key)
    if origin is tuple or hint is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, Sequence):
            raise ConfigError(f"{key}: must be a list, got {value!r}")
        return tuple(_convert(v, str, key) for v in value)
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r} for {key}")


def build_section(cls, data, key: str = ""):
    """Builds the dataclass ``cls`` from a mapping, checking keys and value types.

    Args:
      cls: a config dataclass (or :class:`jaxcpd.train.TrainConfig`).
      data: mapping from field names to YAML values (``None``: all defaults).
      key: dotted path of the section, for messages.

    Returns:
      The dataclass instance.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{key or 'config'}: must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f" in {key}" if key else ""
        raise ConfigError(f"unknown key {unknown[0]!r}{where}; valid keys: {', '.join(names)}")
    kwargs = {k: _convert(v, hints[k], f"{key}.{k}" if key else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as error:  # TrainConfig's messages start with the field name
        raise ConfigError(f"{key}.{error}" if key else str(error)) from None


_MANAGED = {
    "run_dir": "under the top-level 'output'",
    "resume": "use the top-level 'resume'",
    "seed": "use the top-level 'seed'",
}


def _parse_override(text: str) -> tuple[list[str], object]:
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. finetune.steps=100")
    path, raw = text.split("=", 1)
    keys = path.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {text!r}: bad key {path!r}")
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: value is not valid YAML ({error.problem})") from None
    return keys, value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Applies ``key.sub=value`` overrides (values parsed as YAML) to plain config data.

    Args:
      data: plain config data (not modified).
      overrides: strings such as ``"finetune.steps=100"`` or ``"compression.methods=[cpd]"``.

    Returns:
      The updated copy.
    """
    out = _plain(dict(data))
    for text in overrides:
        keys, value = _parse_override(text)
        node = out
        for depth, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {'.'.join(keys[: depth + 1])} is not a section")
            node = child
        node[keys[-1]] = value
    return out


def config_from_dict(data, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Builds and validates an :class:`ExperimentConfig` from plain data plus overrides."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: must be a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(dict(data), overrides)
    for section in ("baseline", "finetune"):
        for key in _MANAGED:
            if isinstance(data.get(section), Mapping) and key in data[section]:
                raise ConfigError(f"{section}.{key}: set by the experiment ({_MANAGED[key]})")
    return build_section(ExperimentConfig, data)


def load_config(path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Reads a YAML experiment config and applies ``--set`` overrides.

    Args:
      path: the YAML file.
      overrides: ``key=value`` strings (see :func:`apply_overrides`).

    Returns:
      The validated :class:`ExperimentConfig`.

    Raises:
      FileNotFoundError: the file does not exist.
      ConfigError: bad YAML, unknown keys, bad values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = _yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    return config_from_dict(data, overrides)


def save_config(config: ExperimentConfig, path) -> Path:
    """Writes the resolved config as YAML (loadable with :func:`load_config`)."""
    path = Path(path)
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return path
