"""The CelebA-HQ identity setting: a user-provided folder of identity-labelled images.

CelebA-HQ cannot be downloaded by a script (its licence needs a request), so the paper's
identity-wise setting (307 identities, ResNet-34 at 224 px) reads a folder that users
build from their copy::

    ROOT/
      train/<identity>/<image>.jpg|.jpeg|.png
      test/<identity>/<image>.jpg|.jpeg|.png

Identities are the sub-folder names; sorted (numerically when every name is an integer,
else as strings) they become labels ``0..K-1``, the same in both splits. Files are sorted
by name inside each identity, so absolute indices are stable. Images are decoded with
Pillow and resized to ``image_size`` x ``image_size`` once, into a uint8 ``.npy`` cache in
``ROOT/.scissorhands_cache`` (named by a digest of the file list, sizes and modification
times, so an edited folder is decoded again) that every epoch reads as a memory map;
with ``cache=False``, or a read-only ``ROOT``, they are decoded when read, batch by batch.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scissorhands_jax.data.loader import ImageTable, Normalization

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_NORMALIZATION = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
"""ImageNet statistics, the usual choice for 224-px face crops."""


@dataclass(frozen=True)
class ImageFiles:
    """Lazily decoded RGB images of a list of files, resized to a square.

    ``files[idx]`` reads, converts to RGB and resizes (bilinear) the selected files and
    returns a uint8 ``(len(idx), size, size, 3)`` array.
    """

    paths: tuple[str, ...]
    size: int
    shape: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "shape", (len(self.paths), self.size, self.size, 3))

    def __getitem__(self, idx) -> np.ndarray:
        from PIL import Image  # local: only this loader needs Pillow

        out = np.empty((len(np.atleast_1d(idx)), self.size, self.size, 3), np.uint8)
        for j, i in enumerate(np.atleast_1d(idx)):
            with Image.open(self.paths[int(i)]) as img:
                rgb = img.convert("RGB")
                if rgb.size != (self.size, self.size):
                    rgb = rgb.resize((self.size, self.size), Image.BILINEAR)
                out[j] = np.asarray(rgb)
        return out


CACHE_DIR = ".scissorhands_cache"


def _files_digest(files: ImageFiles) -> str:
    digest = hashlib.sha256(f"{files.size}".encode())
    for path in files.paths:
        st = os.stat(path)
        digest.update(f"|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def decoded_cache(files: ImageFiles, cache_dir: str | os.PathLike, *, chunk: int = 256):
    """Every image of ``files`` decoded once into ``cache_dir``; a read-only memory map.

    The cache file is ``<n>x<size>px-<digest>.npy``; a complete file is reused, an
    interrupted decode leaves only a temporary file that is never read.

    Returns:
      A uint8 ``(n, size, size, 3)`` ``np.memmap`` with the pixels ``files[i]`` gives.
    """
    n = len(files.paths)
    target = Path(cache_dir) / f"{n}x{files.size}px-{_files_digest(files)}.npy"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=files.shape)
        for lo in range(0, n, chunk):
            out[lo : lo + chunk] = files[np.arange(lo, min(lo + chunk, n))]
        out.flush()
        del out
        os.replace(tmp, target)
    return np.load(target, mmap_mode="r")


def _identities(root: Path) -> list[str]:
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if names and all(n.isdigit() for n in names):
        names.sort(key=int)
    return names


def _scan(split_dir: Path, label_of: dict[str, int]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for name, label in label_of.items():
        folder = split_dir / name
        if not folder.is_dir():
            continue
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return paths, labels


def read_identity_folder(
    root: str | os.PathLike,
    *,
    image_size: int = 224,
    limit_train: int | None = None,
    limit_test: int | None = None,
    cache: bool = True,
) -> tuple[ImageTable, ImageTable, int]:
    """Reads ``ROOT/train`` and ``ROOT/test`` of an identity-labelled image folder.

    Args:
      root: the folder (layout in the module docstring).
      image_size: side of the square the images are resized to.
      limit_train: keep only the first ``limit_train`` training files (smoke runs).
      limit_test: likewise for the test files.
      cache: decode every image once into ``ROOT/.scissorhands_cache``
        (:func:`decoded_cache`); a folder that cannot be written falls back to decoding
        batch by batch, with a warning.

    Returns:
      ``(train, test, num_identities)``; labels index the sorted identity names of
      ``ROOT/train``.

    Raises:
      ValueError: a missing folder or split, no images, or test identities that do not
        occur in train.
    """
    root = Path(root) if root is not None else None
    if root is None or not root.is_dir():
        raise ValueError(
            f"CelebA-HQ identity folder {root} does not exist; build ROOT/train/<identity>/ "
            "and ROOT/test/<identity>/ from your CelebA-HQ copy and set data.data_dir to ROOT."
        )
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ValueError(f"{root} has no {split}/ folder of identity sub-folders.")
    names = _identities(root / "train")
    unknown = sorted(set(_identities(root / "test")) - set(names))
    if unknown:
        raise ValueError(f"{root}/test has identities missing from train: {unknown[:5]}.")
    label_of = {name: i for i, name in enumerate(names)}
    tables = []
    for split, limit in (("train", limit_train), ("test", limit_test)):
        paths, labels = _scan(root / split, label_of)
        if not paths:
            raise ValueError(f"{root}/{split} holds no {'/'.join(IMAGE_SUFFIXES)} images.")
        if limit is not None:
            paths, labels = paths[:limit], labels[:limit]
        images = ImageFiles(tuple(paths), image_size)
        if cache:
            try:
                images = decoded_cache(images, root / CACHE_DIR)
            except OSError as err:
                warnings.warn(
                    f"cannot write the decoded-image cache in {root / CACHE_DIR} ({err}); "
                    "decoding every batch instead (slower).",
                    stacklevel=2,
                )
        tables.append(ImageTable(images, np.asarray(labels, np.int32)))
    return tables[0], tables[1], len(names)
