"""The image loader: host-side keys with the bits of ``jax.random.fold_in``, the
prefetch thread, per-process slices of each batch, and the CelebA-HQ uint8 cache."""

from __future__ import annotations

import threading

import jax
import numpy as np
import pytest

from scissorhands_jax.data import ImageSource, ImageTable, Normalization
from scissorhands_jax.data.batching import permutation
from scissorhands_jax.data.loader import (
    batch_words,
    key_words,
    prefetch,
    threefry_fold_in,
)

NORM = Normalization((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def _reference_batches(table, indices, batch_size, key, pad, crop, start=0):
    """The loader as it was before host-side keys: each batch's key folded by JAX on the
    device, its bits read back, PCG64 seeded with them, then a padded crop and a flip."""
    n = len(indices)
    order = permutation(key, n)
    for i in range(start, -(-n // batch_size)):
        rows = indices[order[i * batch_size : (i + 1) * batch_size]]
        images = np.asarray(table.images[rows])
        bits = np.asarray(jax.random.key_data(jax.random.fold_in(key, i)), np.uint32)
        rng = np.random.default_rng(bits.ravel().tolist())
        b, h, w = images.shape[:3]
        dy, dx = rng.integers(0, 2 * pad + 1, size=(2, b)) if crop else np.zeros((2, b), int)
        mirror = rng.random(b) < 0.5
        if crop:
            images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        out = np.empty((b, h, w, images.shape[3]), images.dtype)
        for j in range(b):  # one image at a time, no fancy indexing
            cut = images[j, dy[j] : dy[j] + h, dx[j] : dx[j] + w]
            out[j] = cut[:, ::-1] if mirror[j] else cut
        mean, std = np.asarray(NORM.mean, np.float32), np.asarray(NORM.std, np.float32)
        yield {
            "image": (out.astype(np.float32) / 255.0 - mean) / std,
            "label": np.asarray(table.labels[rows], np.int32),
        }


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    return ImageTable(rng.integers(0, 256, (37, 6, 6, 3), np.uint8), rng.integers(0, 5, 37))


@pytest.mark.parametrize("seed", [0, 1, 2**31 + 5])
def test_host_fold_in_has_the_bits_of_jax(seed):
    key = jax.random.key(seed)
    for data in [0, 1, 7, 255, 65536, 123456789, 2**32 - 1]:
        expected = np.asarray(jax.random.key_data(jax.random.fold_in(key, data)))
        np.testing.assert_array_equal(threefry_fold_in(key_words(key), data), expected)
    raw = jax.random.PRNGKey(seed)  # legacy raw uint32 keys too
    np.testing.assert_array_equal(batch_words(raw, [3])[0], jax.random.fold_in(raw, 3))


def test_other_key_implementations_fold_like_jax():
    key = jax.random.key(4, impl="rbg")
    expected = np.asarray(jax.random.key_data(jax.random.fold_in(key, 9))).ravel()
    np.testing.assert_array_equal(batch_words(key, [9])[0], expected)


@pytest.mark.parametrize("augment,depth", [("crop_flip", 0), ("crop_flip", 2), ("flip", 1)])
def test_batches_equal_the_device_keyed_reference(table, augment, depth):
    indices = np.arange(3, 37)
    source = ImageSource(table, indices, 8, NORM, augment=augment, pad=2, prefetch=depth)
    for epoch in range(3):
        key = jax.random.fold_in(jax.random.key(11), epoch)
        got = list(source(key))
        want = list(_reference_batches(table, indices, 8, key, 2, augment == "crop_flip"))
        assert len(got) == len(want) == 5
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g["label"], w["label"])
            np.testing.assert_allclose(g["image"], w["image"], rtol=1e-6, atol=1e-6)
        # a resumed epoch draws the same tail
        tail = list(source.batches(key, 3))
        for g, w in zip(tail, got[3:], strict=True):
            np.testing.assert_array_equal(g["image"], w["image"])


def test_prefetch_order_close_and_errors():
    assert list(prefetch(iter(range(50)), 2)) == list(range(50))
    before = threading.active_count()
    it = prefetch(iter(range(1000)), 2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()  # an abandoned epoch stops its thread
    assert threading.active_count() == before

    def failing():
        yield 1
        raise OSError("disk gone")

    it = prefetch(failing(), 2)
    assert next(it) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(it)
    placed = list(prefetch(iter([{"x": np.ones(3)}]), 1, jax.devices()[0]))
    assert isinstance(placed[0]["x"], jax.Array)


class _Recorder:
    """An image array that remembers which rows it was asked for."""

    def __init__(self, images):
        self.images, self.shape, self.read = images, images.shape, []

    def __getitem__(self, idx):
        self.read += np.atleast_1d(idx).tolist()
        return self.images[idx]


def test_each_process_reads_and_yields_only_its_slice(table):
    key = jax.random.key(5)
    whole = list(ImageSource(table, np.arange(37), 12, NORM, "crop_flip", drop_last=True)(key))
    parts = []
    for p in range(3):
        recorder = _Recorder(table.images)
        local = ImageTable(recorder, table.labels)
        source = ImageSource(
            local,
            np.arange(37),
            12,
            NORM,
            "crop_flip",
            True,
            True,
            process_index=p,
            process_count=3,
        )
        parts.append(list(source(key)))
        assert len(recorder.read) == sum(len(b["label"]) for b in parts[-1]) == 12
    for i, batch in enumerate(whole):
        for name in ("image", "label"):
            joined = np.concatenate([parts[p][i][name] for p in range(3)])
            np.testing.assert_array_equal(joined, batch[name])


def test_by_default_every_process_yields_the_whole_global_batch(table, monkeypatch):
    # what shard_batch and the training loops expect in a multi-process job: process 1
    # of 2 sees the same 12 + 12 + 12 + 1 examples as a one-process run
    key = jax.random.key(5)
    whole = list(ImageSource(table, np.arange(37), 12, NORM, "crop_flip")(key))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    seen = list(ImageSource(table, np.arange(37), 12, NORM, "crop_flip")(key))
    assert [len(b["label"]) for b in seen] == [12, 12, 12, 1]
    for mine, batch in zip(seen, whole, strict=True):
        np.testing.assert_array_equal(mine["image"], batch["image"])
        np.testing.assert_array_equal(mine["label"], batch["label"])


def test_a_batch_that_does_not_split_over_processes_is_refused(table):
    source = ImageSource(table, np.arange(37), 12, NORM, process_index=0, process_count=3)
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        list(source(jax.random.key(0)))  # the last batch holds 1 example


def _write_folder(root, counts, size=(20, 30)):
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, per_identity in counts.items():
        for identity, count in per_identity.items():
            (root / split / identity).mkdir(parents=True)
            for j in range(count):
                pixels = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / identity / f"{j:02d}.png")


def test_celeba_images_are_decoded_once_into_a_uint8_cache(tmp_path, monkeypatch):
    from PIL import Image

    from scissorhands_jax.data import celeba_folder

    _write_folder(tmp_path, {"train": {"1": 3, "2": 2}, "test": {"1": 1}})
    train, _, _ = celeba_folder.read_identity_folder(tmp_path, image_size=12)
    assert isinstance(train.images, np.memmap) and train.images.dtype == np.uint8
    files = sorted((tmp_path / "train").rglob("*.png"), key=lambda p: (p.parent.name, p.name))
    for i, path in enumerate(files):  # Pillow's own decode and bilinear resize
        with Image.open(path) as img:
            want = np.asarray(img.convert("RGB").resize((12, 12), Image.BILINEAR))
        np.testing.assert_array_equal(train.images[i], want)
    cached = sorted((tmp_path / celeba_folder.CACHE_DIR).iterdir())
    assert [p.suffix for p in cached] == [".npy", ".npy"]  # train and test, no temp files

    def no_decode(self, idx):
        raise AssertionError("decoded again")

    monkeypatch.setattr(celeba_folder.ImageFiles, "__getitem__", no_decode)
    again, _, _ = celeba_folder.read_identity_folder(tmp_path, image_size=12)
    np.testing.assert_array_equal(again.images[np.arange(5)], train.images[np.arange(5)])
    monkeypatch.undo()
    # an edited folder is decoded again, into a new cache file
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(files[0])
    edited, _, _ = celeba_folder.read_identity_folder(tmp_path, image_size=12)
    assert not edited.images[0].any() and len(list(cached[0].parent.iterdir())) == 3
    lazy, _, _ = celeba_folder.read_identity_folder(tmp_path, image_size=12, cache=False)
    assert isinstance(lazy.images, celeba_folder.ImageFiles)
    np.testing.assert_array_equal(lazy.images[np.arange(5)], edited.images[np.arange(5)])
