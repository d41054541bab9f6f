"""tfds sources under tfds.testing.mock_data (no download, no TensorFlow), splits, forget
requests, the loader and its augmentation, and the CelebA-HQ identity folder."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import scissorhands_jax as shs
from scissorhands_jax.data import (
    ImageSource,
    ImageTable,
    Normalization,
    holdout_validation,
    load_dataset,
    make_split,
    random_crop_flip,
    read_identity_folder,
    read_tfds_split,
    select_forget_indices,
)
from scissorhands_jax.data.tfds_source import TFDS_DATASETS

N = 60


@pytest.fixture(scope="module")
def cifar():
    with tfds.testing.mock_data(num_examples=N, policy=tfds.testing.MockPolicy.USE_CODE):
        return load_dataset("cifar10", progress=False)


@pytest.mark.parametrize("name", sorted(TFDS_DATASETS))
def test_tfds_tables_shapes_and_dtypes(name):
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        table = read_tfds_split(name, "train", progress=False)
        limited = read_tfds_split(name, "test", limit=5, progress=False)
        source = tfds.data_source(name, split="train")
        reference = [source[i] for i in range(12)]
    assert table.images.shape == (12, 32, 32, 3) and table.images.dtype == np.uint8
    assert table.labels.shape == (12,) and table.labels.dtype == np.int32
    assert len(limited) == 5
    # row i is tfds record i: absolute indices are record indices
    for i, ex in enumerate(reference):
        np.testing.assert_array_equal(table.images[i], ex["image"])
        assert table.labels[i] == ex["label"]
    assert np.all((0 <= table.labels) & (table.labels < TFDS_DATASETS[name].num_classes))


def test_missing_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(ValueError, match=f"scissorhands prepare cifar10 --data-dir {tmp_path}"):
        read_tfds_split("cifar10", "train", data_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown tfds data set"):
        read_tfds_split("mnist", "train", progress=False)


def test_loader_batches_are_normalised_once(cifar):
    split = make_split(cifar, forget={"kind": "random", "fraction": 0.1, "seed": 0})
    source = split.source("test", 16, shuffle=False)
    batch = next(source.batches(None))
    assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    mean = np.array([0.4914, 0.4822, 0.4465])
    std = np.array([0.2470, 0.2435, 0.2616])
    expected = (cifar.test.images[:16] / 255.0 - mean) / std  # float64 hand reference
    np.testing.assert_allclose(batch["image"], expected, rtol=1e-5, atol=1e-5)
    assert source.num_batches == -(-N // 16)
    sizes = [b["label"].shape[0] for b in source(jax.random.key(0))]
    assert sizes == [16, 16, 16, N - 48]


def test_split_sizes_on_cifar_shaped_labels():
    labels = np.repeat(np.arange(10), 5000).astype(np.int32)  # CIFAR-10 train: 5,000 per class
    val = holdout_validation(labels, 0.1, seed=0)
    assert val.size == 5000 and np.all(np.bincount(labels[val]) == 500)
    pool = np.setdiff1d(np.arange(50000), val)
    for fraction, size in ((0.1, 4500), (0.2, 9000), (0.5, 22500)):
        forget, classes = select_forget_indices(
            labels, pool, kind="random", fraction=fraction, seed=1
        )
        assert forget.size == size and classes == ()
        assert np.isin(forget, pool).all() and np.all(np.diff(forget) > 0)


def test_split_parts_partition_the_training_split(cifar):
    split = make_split(cifar, val_fraction=0.1, forget={"kind": "random", "fraction": 0.2})
    ix = split.indices
    counts = np.bincount(cifar.train.labels, minlength=10)
    assert ix.val.size == sum(int(np.floor(0.1 * c)) for c in counts)
    assert ix.forget.size == int(0.2 * (N - ix.val.size))
    everything = np.concatenate([ix.val, ix.forget, ix.retain])
    assert np.array_equal(np.sort(everything), np.arange(N))  # disjoint and complete
    assert np.array_equal(split.indices.pool, np.sort(np.concatenate([ix.forget, ix.retain])))


def test_random_forget_is_seeded_and_matches_digits_rule():
    labels = np.zeros(1437, np.int32)
    pool = np.arange(1437)
    a, _ = select_forget_indices(labels, pool, kind="random", fraction=0.1, seed=3)
    b, _ = select_forget_indices(labels, pool, kind="random", fraction=0.1, seed=3)
    c, _ = select_forget_indices(labels, pool, kind="random", fraction=0.1, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # digits-10 random10 (the protocol): sorted(default_rng(s).choice(1437, 143, replace=False))
    assert np.array_equal(a, shs.data.select_forget(labels, "random10", 3))


def test_class_forget_and_test_set_for_ta(cifar):
    split = make_split(cifar, forget={"kind": "class", "classes": 3})
    train_labels = cifar.train.labels
    expected = np.setdiff1d(np.flatnonzero(train_labels == 3), split.indices.val)
    assert np.array_equal(split.indices.forget, expected)
    assert split.indices.forgotten_classes == (3,)
    assert np.array_equal(split.test_indices, np.flatnonzero(cifar.test.labels != 3))
    assert 3 not in split.labels("test") and 3 not in split.labels("retain")
    with pytest.raises(ValueError, match="needs 'classes'"):
        make_split(cifar, forget={"kind": "class"})


def test_identity_forget_draws_identities(cifar):
    split = make_split(cifar, forget={"kind": "identity", "count": 2, "seed": 5})
    chosen = split.indices.forgotten_classes
    present = np.unique(cifar.train.labels[split.indices.pool])
    reference = np.sort(np.random.default_rng(5).choice(present, 2, replace=False))
    assert chosen == tuple(reference.tolist())
    assert set(split.labels("forget")) == set(chosen)
    assert not set(split.labels("test")) & set(chosen)


@pytest.mark.parametrize("suffix", [".npy", ".json", ".txt"])
def test_index_file_forget(cifar, tmp_path, suffix):
    base = make_split(cifar, forget={"kind": "random", "fraction": 0.25, "seed": 7})
    wanted = base.indices.forget
    path = tmp_path / f"forget{suffix}"
    if suffix == ".npy":
        np.save(path, wanted)
    elif suffix == ".json":
        path.write_text(json.dumps(wanted.tolist()))
    else:
        path.write_text("\n".join(map(str, wanted[::-1])))
    split = make_split(cifar, forget={"kind": "file", "file": str(path)})
    assert np.array_equal(split.indices.forget, wanted)
    assert np.array_equal(split.indices.retain, base.indices.retain)


def test_index_file_errors(cifar, tmp_path):
    val = make_split(cifar, forget={"kind": "random", "fraction": 0.1}).indices.val
    path = tmp_path / "f.json"
    for bad in ([N + 5], [int(i) for i in val[:1]]):  # past the end; a validation example
        if not bad:
            continue
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match="outside the training pool"):
            make_split(cifar, forget={"kind": "file", "file": str(path)})
    path.write_text(json.dumps([1, 1]))
    with pytest.raises(ValueError, match="repeats"):
        make_split(cifar, val_fraction=0.0, forget={"kind": "file", "file": str(path)})
    path.write_text(json.dumps([1.5]))
    with pytest.raises(ValueError, match="integers"):
        make_split(cifar, forget={"kind": "file", "file": str(path)})
    with pytest.raises(ValueError, match="does not exist"):
        make_split(cifar, forget={"kind": "file", "file": str(tmp_path / "none.npy")})


def test_saved_indices_rederive_the_request(cifar, tmp_path):
    split = make_split(cifar, forget={"kind": "random", "fraction": 0.3, "seed": 2})
    split.indices.save(tmp_path, {"name": "cifar10"})
    forget, val = np.load(tmp_path / "forget_indices.npy"), np.load(tmp_path / "val_indices.npy")
    retain = np.setdiff1d(np.setdiff1d(np.arange(N), val), forget)
    assert np.array_equal(retain, split.indices.retain)
    assert split.indices.matches_saved(tmp_path) is None
    other = make_split(cifar, forget={"kind": "random", "fraction": 0.3, "seed": 9})
    assert "differ" in other.indices.matches_saved(tmp_path)


def test_loader_is_deterministic_and_resumable(cifar):
    split = make_split(cifar, forget={"kind": "random", "fraction": 0.2})
    source = split.source("retain", 8, augment=True)
    key = jax.random.key(11)
    first = list(source(key))
    again = list(source(key))
    other = list(source(jax.random.key(12)))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(first[0]["label"], other[0]["label"]) or not np.array_equal(
        first[0]["image"], other[0]["image"]
    )
    resumed = list(source.batches(key, start=2))
    assert len(resumed) == len(first) - 2
    for a, b in zip(first[2:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    # one epoch visits every retain example exactly once
    seen = np.concatenate([b["label"] for b in first])
    assert np.array_equal(np.sort(seen), np.sort(split.labels("retain")))


def _crops(image: np.ndarray, pad: int):
    """Every padded crop and its mirror (brute-force reference)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            yield (dy, dx, False), crop
            yield (dy, dx, True), crop[:, ::-1]


def test_random_crop_flip_against_brute_force():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(64, 8, 8, 3), dtype=np.uint8)  # no zero pixels
    key = jax.random.key(3)
    out = random_crop_flip(images, key, pad=2)
    np.testing.assert_array_equal(out, random_crop_flip(images, key, pad=2))
    assert not np.array_equal(out, random_crop_flip(images, jax.random.key(4), pad=2))
    assert out.shape == images.shape and out.dtype == np.uint8
    draws = []
    for image, result in zip(images, out, strict=True):
        matches = [d for d, crop in _crops(image, 2) if np.array_equal(crop, result)]
        assert matches, "the output is not a padded crop (or its mirror) of the input"
        draws.append(matches[0])
    offsets = {d[:2] for d in draws}
    assert len(offsets) > 10 and {d[2] for d in draws} == {False, True}
    flipped = random_crop_flip(images, key, crop=False)
    for image, result in zip(images, flipped, strict=True):
        assert np.array_equal(result, image) or np.array_equal(result, image[:, ::-1])


def test_augmentation_follows_the_batch_key():
    table = ImageTable(np.arange(4 * 6 * 6 * 3, dtype=np.uint8).reshape(4, 6, 6, 3), np.zeros(4))
    norm = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0)
    source = ImageSource(table, np.arange(4), 2, norm, augment="crop_flip", shuffle=False)
    key = jax.random.key(1)
    batches = list(source(key))
    for i, batch in enumerate(batches):  # batch i uses fold_in(key, i), nothing else
        expected = random_crop_flip(table.images[2 * i : 2 * i + 2], jax.random.fold_in(key, i))
        np.testing.assert_array_equal(batch["image"], expected.astype(np.float32))
    with pytest.raises(ValueError, match="augment must be one of"):
        ImageSource(table, np.arange(4), 2, norm, augment="mixup")


def _write_identity_folder(root, sizes):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in sizes.items():
        for identity, count in counts.items():
            folder = root / split / identity
            folder.mkdir(parents=True)
            for j in range(count):
                pixels = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{j:03d}.png")


def test_celeba_identity_folder(tmp_path):
    _write_identity_folder(
        tmp_path,
        {"train": {"10": 4, "2": 3, "7": 5}, "test": {"2": 1, "10": 2}},
    )
    train, test, k = read_identity_folder(tmp_path, image_size=16)
    assert k == 3 and len(train) == 12 and len(test) == 3
    # identities sort numerically: "2" -> 0, "7" -> 1, "10" -> 2
    assert train.labels.tolist() == [0] * 3 + [1] * 5 + [2] * 4
    assert test.labels.tolist() == [0, 2, 2]
    batch = train.images[np.array([0, 5])]
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.uint8
    dataset = load_dataset("celeba_folder", data_dir=tmp_path, image_size=16, limit_train=8)
    assert len(dataset.train) == 8 and dataset.augment == "flip"
    split = make_split(dataset, val_fraction=0.0, forget={"kind": "identity", "classes": [1]})
    assert split.labels("forget").tolist() == [1] * 5
    assert 1 not in split.labels("test")
    batch = next(split.source("forget", 4, augment=True)(jax.random.key(0)))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["image"].dtype == np.float32


def test_celeba_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_identity_folder(tmp_path / "missing")
    _write_identity_folder(tmp_path, {"train": {"a": 1}, "test": {"b": 1}})
    with pytest.raises(ValueError, match="missing from train"):
        read_identity_folder(tmp_path)
