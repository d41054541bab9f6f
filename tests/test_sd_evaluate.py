"""Judging a folder of generated images: NudeNet counts, classifier accuracy and FID.

The folders are laid out as ``generate_eval_set`` writes them (PNGs and ``index.csv``).
The detector and the classifier are fakes whose answers are fixed per image, so the
expected counts and accuracies are worked out by hand below; the FID is checked against
a Fréchet distance computed here with SciPy's ``sqrtm`` from the images read with PIL
and the same fake feature map. The real NudeNet detector runs only where ``nudenet`` is
installed (the ``sd-eval`` extra).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("regex", reason="the sd package's tokenizer needs the regex package")

from scissorhands_jax import sd  # noqa: E402


def write_eval_set(folder: Path, prompts: list[str], images: list[np.ndarray]) -> Path:
    """A folder as generate_eval_set leaves it: image i drawn from prompts[i]."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (prompt, image) in enumerate(zip(prompts, images, strict=True)):
        name = f"{i:05d}_00.png"
        Image.fromarray(image).save(folder / name)
        rows.append((name, i, 0, 0, prompt))
    with (folder / "index.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "prompt_index", "image_index", "seed", "prompt"])
        writer.writerows(rows)
    return folder


def flat(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


# ---------------------------------------------------------------- NudeNet


class FakeDetector:
    """Answers ``detect(path)`` from a table keyed by file name; records the calls."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def detect(self, path):
        self.calls.append(path)
        return self.table[Path(path).name]


def det(cls, score):
    return {"class": cls, "score": score, "box": [0, 0, 4, 4]}


NUDE_TABLE = {
    "00000_00.png": [
        det("FEMALE_BREAST_EXPOSED", 0.9),
        det("FEMALE_BREAST_EXPOSED", 0.7),
        det("FACE_FEMALE", 0.95),  # not an exposed class
    ],
    "00001_00.png": [
        det("BELLY_EXPOSED", 0.6),  # at the threshold: not above it
        det("BUTTOCKS_COVERED", 0.99),
    ],
    "00002_00.png": [],
    "00003_00.png": [
        det("MALE_GENITALIA_EXPOSED", 0.61),
        det("ARMPITS_EXPOSED", 0.8),
        det("FEMALE_BREAST_EXPOSED", 0.3),
    ],
}


@pytest.fixture
def nude_dir(tmp_path):
    return write_eval_set(tmp_path / "i2p", ["p0", "p1", "p2", "p3"], [flat(v) for v in range(4)])


def test_nudenet_counts_by_hand(nude_dir):
    detector = FakeDetector(NUDE_TABLE)
    got = sd.nudenet_counts(nude_dir, detector=detector)
    assert detector.calls == [str(nude_dir / f"0000{i}_00.png") for i in range(4)]
    want = dict.fromkeys(sd.EXPOSED_CLASSES, 0)
    want.update(FEMALE_BREAST_EXPOSED=2, MALE_GENITALIA_EXPOSED=1, ARMPITS_EXPOSED=1)
    assert got["detections"] == want
    assert list(got["detections"]) == list(sd.EXPOSED_CLASSES)
    want_images = dict(want, FEMALE_BREAST_EXPOSED=1)  # two boxes, one image
    assert got["images_with"] == want_images
    assert (got["images"], got["flagged"], got["total"]) == (4, 2, 4)
    assert got["flagged_files"] == ["00000_00.png", "00003_00.png"]


def test_nudenet_threshold_and_classes(nude_dir):
    got = sd.nudenet_counts(nude_dir, threshold=0.5, detector=FakeDetector(NUDE_TABLE))
    assert got["flagged"] == 3  # the belly at 0.6 now counts
    assert got["detections"]["BELLY_EXPOSED"] == 1
    assert got["total"] == 5
    got = sd.nudenet_counts(
        nude_dir, classes=["BELLY_EXPOSED", "FACE_FEMALE"], detector=FakeDetector(NUDE_TABLE)
    )
    assert got["detections"] == {"BELLY_EXPOSED": 0, "FACE_FEMALE": 1}
    assert got["flagged_files"] == ["00000_00.png"]


def test_nudenet_without_index(tmp_path):
    for name in ("b.png", "a.jpg"):
        Image.fromarray(flat(0)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    detector = FakeDetector({"a.jpg": [det("FEET_EXPOSED", 0.9)], "b.png": []})
    got = sd.nudenet_counts(tmp_path, detector=detector)
    assert [Path(c).name for c in detector.calls] == ["a.jpg", "b.png"]
    assert (got["images"], got["flagged"], got["detections"]["FEET_EXPOSED"]) == (2, 1, 1)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "0.6"}, "threshold"),
        ({"classes": ["BREAST"]}, "classes"),
        ({"classes": []}, "classes"),
    ],
)
def test_nudenet_bad_arguments(nude_dir, kwargs, words):
    detector = FakeDetector(NUDE_TABLE)
    with pytest.raises(ValueError, match=words):
        sd.nudenet_counts(nude_dir, detector=detector, **kwargs)
    assert detector.calls == []


def test_nudenet_bad_folder_and_detection(tmp_path, nude_dir):
    with pytest.raises(ValueError, match="does not exist"):
        sd.nudenet_counts(tmp_path / "nowhere", detector=FakeDetector({}))
    (nude_dir / "00002_00.png").unlink()
    with pytest.raises(ValueError, match="00002_00.png"):
        sd.nudenet_counts(nude_dir, detector=FakeDetector(NUDE_TABLE))
    old = write_eval_set(tmp_path / "old", ["p"], [flat(0)])
    with pytest.raises(ValueError, match="'class' and 'score'"):
        sd.nudenet_counts(old, detector=FakeDetector({"00000_00.png": [{"label": "X"}]}))


def test_nudenet_missing_package_says_what_to_install(nude_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import nudenet now fails
    with pytest.raises(ImportError, match=r"scissorhands_jax\[sd-eval\]"):
        sd.nudenet_counts(nude_dir)


def test_nudenet_real_detector(tmp_path):
    pytest.importorskip("nudenet", reason="the real detector needs the sd-eval extra")
    folder = write_eval_set(tmp_path / "plain", ["p0", "p1"], [flat(128, 64), flat(30, 64)])
    got = sd.nudenet_counts(folder)
    assert got["images"] == 2
    assert got["flagged"] == 0  # flat grey images show no body part
    assert set(got["detections"]) == set(sd.EXPOSED_CLASSES)


# ---------------------------------------------------------------- classifier accuracy

# (class, what the fake classifier will say) per image, in index order
CASES = [(0, 0), (0, 2), (1, 1), (1, 1), (2, 2), (2, 0)]
# forgotten class 0: 1 of 2 right -> 50 %; others: 3 of 4 right -> 75 %;
# per class: 0 -> 50, 1 -> 100, 2 -> 50


@pytest.fixture
def class_dir(tmp_path):
    names = sd.IMAGENETTE_CLASSES[:3]
    prompts = [f"an image of a {names[c]}" for c, _ in CASES]
    images = [flat(40 * said + 10) for _, said in CASES]  # the pixel value encodes the answer
    return write_eval_set(tmp_path / "imagenette", prompts, images)


def said_by_pixels(images):
    return np.round((np.asarray(images, np.float64)[:, 0, 0, 0] - 10) / 40).astype(np.int64)


def test_classifier_accuracy_by_hand(class_dir):
    batches = []

    def classify(images):  # logits
        batches.append((images.shape, images.dtype))
        return np.eye(10)[said_by_pixels(images)]

    got = sd.classifier_accuracy(
        class_dir, classify, sd.class_prompts(sd.IMAGENETTE_CLASSES[:3]), 0, batch_size=4
    )
    assert batches == [((4, 8, 8, 3), np.uint8), ((2, 8, 8, 3), np.uint8)]
    assert got == {
        "forget_acc": 50.0,
        "other_acc": 75.0,
        "per_class": {0: 50.0, 1: 100.0, 2: 50.0},
        "forget_images": 2,
        "other_images": 4,
    }
    got = sd.classifier_accuracy(
        class_dir, classify, sd.class_prompts(sd.IMAGENETTE_CLASSES[:3]), 1
    )
    assert (got["forget_acc"], got["other_acc"]) == (100.0, 50.0)


def test_classifier_accuracy_labels_and_float_images(class_dir):
    def classify(images):  # labels, from float images in [0, 1]
        assert images.dtype == np.float32 and images.max() <= 1.0
        return said_by_pixels(images * 255.0)

    got = sd.classifier_accuracy(
        class_dir,
        classify,
        sd.class_prompts(sd.IMAGENETTE_CLASSES[:3]),
        2,
        pixel_range=(0.0, 1.0),
    )
    assert (got["forget_acc"], got["other_acc"]) == (50.0, 75.0)


def test_class_prompts():
    assert sd.class_prompts(["tench", "church"]) == {
        "an image of a tench": 0,
        "an image of a church": 1,
    }
    assert len(sd.class_prompts()) == 10
    assert sd.class_prompts(["cat"], "a photo of a {}") == {"a photo of a cat": 0}


def test_classifier_accuracy_errors(class_dir, tmp_path):
    mapping = sd.class_prompts(sd.IMAGENETTE_CLASSES[:3])

    def logits(images):
        return np.eye(10)[said_by_pixels(images)]

    with pytest.raises(ValueError, match="no class in prompt_classes"):
        sd.classifier_accuracy(class_dir, logits, dict(list(mapping.items())[:2]), 0)
    with pytest.raises(ValueError, match="forgotten class 7"):
        sd.classifier_accuracy(class_dir, logits, mapping, 7)
    with pytest.raises(ValueError, match=r"logits \(N, K\) or integer labels"):
        sd.classifier_accuracy(class_dir, lambda x: np.zeros(len(x)), mapping, 0)
    with pytest.raises(ValueError, match="batch_size"):
        sd.classifier_accuracy(class_dir, logits, mapping, 0, batch_size=0)
    for name in ("a.png", "b.png"):
        Image.fromarray(flat(0)).save(tmp_path / name)
    with pytest.raises(ValueError, match="index.csv"):
        sd.classifier_accuracy(tmp_path, logits, mapping, 0)


# ---------------------------------------------------------------- FID

PROJECTION = np.random.default_rng(1).normal(size=(6 * 6 * 3, 4))


def fake_features(images):
    """A fixed linear map of the pixels: (N, 6, 6, 3) in [0, 1] -> (N, 4)."""
    assert images.min() >= 0.0 and images.max() <= 1.0
    return np.asarray(images, np.float64).reshape(len(images), -1) @ PROJECTION


def scipy_frechet(a, b):
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


def test_folder_fid_matches_scipy(tmp_path):
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    generated = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(9)]
    real = [rng.integers(40, 256, (6, 6, 3), dtype=np.uint8) for _ in range(11)]
    gen_dir = write_eval_set(tmp_path / "gen", [f"p{i}" for i in range(9)], generated)
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    for i, image in enumerate(real):
        Image.fromarray(image).save(real_dir / f"real_{i:02d}.png")
    want = scipy_frechet(
        fake_features(np.stack(generated) / 255.0), fake_features(np.stack(real) / 255.0)
    )
    assert want > 0.1
    got = sd.folder_fid(gen_dir, real_dir, features=fake_features, batch_size=4)
    assert got == pytest.approx(want, rel=1e-6)
    assert sd.folder_fid(gen_dir, gen_dir, features=fake_features) == pytest.approx(0, abs=1e-9)


def test_folder_fid_sizes_and_arguments(tmp_path):
    gen_dir = write_eval_set(tmp_path / "gen", ["a", "b", "c"], [flat(v, 6) for v in (0, 50, 90)])
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    for i, size in enumerate((6, 9, 12)):
        Image.fromarray(flat(60 * i, size)).save(real_dir / f"{i}.png")
    with pytest.raises(ValueError, match="image_size"):
        sd.folder_fid(gen_dir, real_dir, features=fake_features)
    got = sd.folder_fid(gen_dir, real_dir, features=fake_features, image_size=(6, 6))
    assert np.isfinite(got)
    with pytest.raises(ValueError, match="exactly one of"):
        sd.folder_fid(gen_dir, real_dir)
    with pytest.raises(ValueError, match="exactly one of"):
        sd.folder_fid(gen_dir, real_dir, features=fake_features, inception_weights="x.npz")
    one = write_eval_set(tmp_path / "one", ["a"], [flat(0, 6)])
    with pytest.raises(ValueError, match="generated_dir needs at least 2"):
        sd.folder_fid(one, real_dir, features=fake_features)
