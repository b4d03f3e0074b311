"""Data pipelines: the embedded MNIST subset, and tfds cifar10/imagenet2012 driven by tfds mock data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

import jaxcpd.data
from jaxcpd.train import DATASETS, DatasetNotPreparedError, dataset_info, load, transforms


def _collect(batches) -> tuple[np.ndarray, np.ndarray]:
    """Real (unpadded) images and labels of one ordered pass."""
    parts = list(batches)
    images = np.concatenate([b["image"][b["mask"]] for b in parts])
    labels = np.concatenate([b["label"][b["mask"]] for b in parts])
    return images, labels


def _rows(images: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in images}


def test_public_module_reexports_load():
    assert jaxcpd.data.load is load
    assert set(jaxcpd.data.DATASETS) == {"cifar10", "cifar100", "imagenet2012", "mnist-subset"}


def test_mnist_subset_split_is_fixed_stratified_and_disjoint(mnist_train, mnist_test):
    train_images, train_labels = _collect(mnist_train)
    test_images, test_labels = _collect(mnist_test)
    assert (train_images.shape, test_images.shape) == ((4000, 28, 28, 1), (1000, 28, 28, 1))
    assert train_images.dtype == np.float32 and train_labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(train_labels), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test_labels), [100] * 10)
    assert not _rows(train_images) & _rows(test_images)
    # normalised with the MNIST statistics: roughly zero mean, unit deviation
    assert abs(train_images.mean()) < 0.1 and abs(train_images.std() - 1) < 0.1


def test_ordered_pass_pads_the_last_batch(mnist_test):
    batches = list(mnist_test)  # 1000 examples in batches of 250: no padding
    assert len(batches) == len(mnist_test) == 4 and all(b["mask"].all() for b in batches)
    odd = load("mnist-subset", "test", batch_size=300)
    batches = list(odd)
    assert len(batches) == len(odd) == 4
    assert [int(b["mask"].sum()) for b in batches] == [300, 300, 300, 100]
    assert (batches[-1]["image"][100:] == 0).all()


def test_stream_is_a_function_of_seed_and_step(mnist_train):
    first = list(itertools.islice(mnist_train.stream(seed=3), 5))
    resumed = next(mnist_train.stream(seed=3, start_step=4))
    np.testing.assert_array_equal(first[4]["image"], resumed["image"])
    np.testing.assert_array_equal(first[4]["label"], resumed["label"])
    other_seed = next(mnist_train.stream(seed=4))
    assert not np.array_equal(first[0]["label"], other_seed["label"])
    assert all(b["mask"].all() and b["image"].shape == (32, 28, 28, 1) for b in first)


def test_each_epoch_is_a_new_permutation_of_the_split(mnist_train):
    steps = mnist_train.steps_per_epoch
    assert steps == 4000 // 32
    stream = mnist_train.stream(seed=0)
    epochs = [np.concatenate([next(stream)["label"] for _ in range(steps)]) for _ in range(2)]
    np.testing.assert_array_equal(np.bincount(epochs[0]), np.bincount(epochs[1]))
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"name": "svhn", "split": "train", "batch_size": 8}, "name"),
        ({"name": "mnist-subset", "split": "validation", "batch_size": 8}, "split"),
        ({"name": "mnist-subset", "split": "train", "batch_size": 0}, "batch_size"),
        ({"name": "mnist-subset", "split": "train", "batch_size": 9, "shard": (0, 2)}, "batch_size"),
        ({"name": "mnist-subset", "split": "train", "batch_size": 8, "shard": (2, 2)}, "shard"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        load(**kwargs)


def test_bad_stream_arguments_raise_at_the_call(mnist_train):
    with pytest.raises(ValueError, match="^seed:"):
        mnist_train.stream(seed=-1)
    with pytest.raises(ValueError, match="^start_step:"):
        mnist_train.stream(seed=0, start_step=-1)
    with pytest.raises(ValueError, match="^batch_size: 5000 exceeds the 4000 examples of 'train'"):
        load("mnist-subset", "train", batch_size=5000).stream(seed=0)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="cifar10, cifar100, imagenet2012, mnist-subset"):
        dataset_info("svhn")
    assert DATASETS == ("cifar10", "cifar100", "imagenet2012", "mnist-subset")


def test_missing_tfds_data_set_says_how_to_prepare_it(tmp_path):
    with pytest.raises(DatasetNotPreparedError, match="tfds build cifar10") as info:
        load("cifar10", "train", batch_size=8, data_dir=str(tmp_path))
    assert str(tmp_path) in str(info.value) and "array_record" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pipeline_on_mock_data(name):
    info = dataset_info(name)
    with tfds.testing.mock_data(num_examples=20):
        raw = tfds.data_source(name, split="test")
        raw_images = np.stack([raw[i]["image"] for i in range(20)])
        raw_labels = np.array([raw[i]["label"] for i in range(20)])
        images, labels = _collect(load(name, "test", batch_size=8))
        train = load(name, "train", batch_size=8)
        batch = next(train.stream(seed=0))
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.float32
    restored = (images * np.array(info.std) + np.array(info.mean)) * 255
    np.testing.assert_allclose(restored, raw_images, atol=1e-3)
    np.testing.assert_array_equal(labels, raw_labels)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["label"].dtype == np.int32
    assert train.augment and np.isfinite(batch["image"]).all()


def test_per_host_sharding_splits_the_examples_without_overlap():
    with tfds.testing.mock_data(num_examples=21):
        whole_images, whole_labels = _collect(load("cifar10", "test", batch_size=8, shard=(0, 1)))
        hosts = [load("cifar10", "test", batch_size=8, shard=(i, 2)) for i in range(2)]
        parts = [_collect(host) for host in hosts]
        passes = [len(list(host)) for host in hosts]
        train = load("cifar10", "train", batch_size=8, shard=(1, 2))
        local = next(train.stream(seed=0))
    assert [len(labels) for _, labels in parts] == [11, 10]
    assert passes == [len(hosts[0]), len(hosts[1])] == [3, 3]  # same number of batches on every host
    assert not _rows(parts[0][0]) & _rows(parts[1][0])
    assert _rows(parts[0][0]) | _rows(parts[1][0]) == _rows(whole_images)
    assert sorted(np.concatenate([labels for _, labels in parts])) == sorted(whole_labels)
    assert train.local_batch_size == 4 and local["image"].shape == (4, 32, 32, 3)
    assert train.steps_per_epoch == (21 // 2) // 4


def test_imagenet2012_pipeline_on_mock_data():
    info = dataset_info("imagenet2012")
    with tfds.testing.mock_data(num_examples=6):
        raw = tfds.data_source("imagenet2012", split="validation")
        expected = np.stack([
            transforms.normalize(transforms.resize_center_crop(raw[i]["image"], size=224, resize=256),
                                 info.mean, info.std)
            for i in range(6)
        ])
        images, labels = _collect(load("imagenet2012", "validation", batch_size=4))
        batch = next(load("imagenet2012", "train", batch_size=4).stream(seed=0))
    assert images.shape == (6, 224, 224, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images, expected)
    assert labels.dtype == np.int32 and ((labels >= 0) & (labels < 1000)).all()
    assert batch["image"].shape == (4, 224, 224, 3) and batch["image"].dtype == np.float32
    assert np.isfinite(batch["image"]).all() and -3 < batch["image"].min() < batch["image"].max() < 3
