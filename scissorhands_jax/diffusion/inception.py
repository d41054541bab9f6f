"""The Inception-v3 network of the standard FID, in Flax, and its pool3 features.

The Fréchet Inception Distance (Heusel et al., "GANs Trained by a Two Time-Scale Update
Rule Converge to a Local Nash Equilibrium", NeurIPS 2017) compares Gaussians fitted to
the 2048-d ``pool3`` features of one particular Inception-v3 graph (Szegedy et al.,
"Rethinking the Inception Architecture for Computer Vision", CVPR 2016): the TensorFlow
graph ``inception-2015-12-05`` of the TTUR release. That graph differs from the
Inception-v3 of the model zoos in two ways, which the pytorch-fid project
(M. Seitzer, https://github.com/mseitzer/pytorch-fid, ``pytorch_fid/inception.py``)
ported as ``FIDInceptionA``, ``FIDInceptionC``, ``FIDInceptionE_1`` and
``FIDInceptionE_2``; this module follows that port, which is the reference it is
tested against (equal to 1e-13 in float64):

- the average pools inside the mixed blocks leave the padding out of the mean
  (``count_include_pad=False``);
- the last block (``Mixed_7c``) pools its fourth branch with a 3x3 *max* pool.

As in every Inception-v3, convolutions have no bias and BatchNorm has
:math:`\\epsilon = 10^{-3}`. Inputs are images in [0, 1], resized to 299x299 bilinearly
(half-pixel centres, no anti-aliasing, as pytorch-fid's ``F.interpolate(...,
mode="bilinear", align_corners=False)``) and mapped to [-1, 1]; the output is the global
average of the last block, (N, 2048). Scores are pytorch-fid's, which its authors note
differ slightly from those of the original TensorFlow code.

Weights are read from an ``.npz`` file made by :mod:`scissorhands_jax.diffusion.convert_inception`
from pytorch-fid's checkpoint; its keys are the Flax variable paths joined by ``/``:

- ``{block}/conv/kernel``: convolution kernel (kh, kw, in, out), float32;
- ``{block}/bn/scale``, ``{block}/bn/bias``: BatchNorm γ and β, (out,);
- ``{block}/bn/mean``, ``{block}/bn/var``: BatchNorm running mean and variance, (out,);

where ``{block}`` is the pytorch-fid module path with ``/`` for ``.``, e.g.
``Conv2d_1a_3x3`` or ``Mixed_7c/branch3x3dbl_3a`` (:func:`expected_weight_shapes`
lists them all: 94 convolutions, 470 arrays).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FID_FEATURE_DIM = 2048
FID_INPUT_SIZE = 299
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)


def fid_resize(images: jax.Array) -> jax.Array:
    """Bilinear resize of (N, H, W, C) to 299x299 as pytorch-fid does it.

    Half-pixel centres, edges clamped, no anti-aliasing when shrinking: torch's
    ``F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)``.
    """
    x = jnp.asarray(images)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    shape = (x.shape[0], FID_INPUT_SIZE, FID_INPUT_SIZE, x.shape[3])
    return jax.image.resize(x, shape, "bilinear", antialias=False)


class BasicConv(nn.Module):
    """Convolution (no bias), inference BatchNorm (ε = 1e-3), ReLU."""

    features: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel,
            strides=self.strides,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):  # the FID graph's average pools leave the padding out of the mean
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    return nn.max_pool(x, (3, 3), (2, 2), "VALID")


class InceptionA(nn.Module):
    """``Mixed_5b/c/d`` (pytorch-fid ``FIDInceptionA``): 35x35 blocks."""

    pool_features: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """``Mixed_6a``: grid reduction 35x35 -> 17x17."""

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """``Mixed_6b/c/d/e`` (pytorch-fid ``FIDInceptionC``): 17x17 blocks, factorised 7x7."""

    channels_7x7: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """``Mixed_7a``: grid reduction 17x17 -> 8x8."""

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """``Mixed_7b`` (``FIDInceptionE_1``, average pool) and ``Mixed_7c``
    (``FIDInceptionE_2``, ``max_pool=True``): 8x8 blocks with split 3x3 branches."""

    max_pool: bool = False
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        # the TF graph's last block max-pools here (a bug of the original, kept by FID)
        pooled = (
            nn.max_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1))) if self.max_pool else _avg_pool_3x3(x)
        )
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 up to ``pool3`` as in the FID graph: images in [0, 1] -> (N, 2048).

    Call with images (N, H, W, 3) in [0, 1] at any resolution: they are resized to
    299x299 (bilinear, half-pixel centres, no anti-aliasing) and mapped to [-1, 1].
    ``precision`` is that of every convolution (``HIGHEST``: no TF32/bf16 passes on
    accelerators, as the reference computes in float32).
    """

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, images):
        x = 2.0 * fid_resize(images) - 1.0
        conv = functools.partial(BasicConv, precision=self.precision)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        p = self.precision
        x = InceptionA(32, p, name="Mixed_5b")(x)
        x = InceptionA(64, p, name="Mixed_5c")(x)
        x = InceptionA(64, p, name="Mixed_5d")(x)
        x = InceptionB(p, name="Mixed_6a")(x)
        x = InceptionC(128, p, name="Mixed_6b")(x)
        x = InceptionC(160, p, name="Mixed_6c")(x)
        x = InceptionC(160, p, name="Mixed_6d")(x)
        x = InceptionC(192, p, name="Mixed_6e")(x)
        x = InceptionD(p, name="Mixed_7a")(x)
        x = InceptionE(False, p, name="Mixed_7b")(x)
        x = InceptionE(True, p, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def _flatten(tree: dict, prefix: str = "") -> dict[str, tuple[int, ...]]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else k
        out.update(_flatten(v, path) if isinstance(v, dict) else {path: tuple(v.shape)})
    return out


@functools.cache
def expected_weight_shapes() -> dict[str, tuple[int, ...]]:
    """The ``.npz`` key -> array shape of every weight of :class:`FIDInceptionV3`."""
    shapes = jax.eval_shape(
        FIDInceptionV3().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3), jnp.float32)
    )
    params, stats = shapes["params"], shapes["batch_stats"]
    return {**_flatten(params), **_flatten(stats)}


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def load_inception_variables(weights_path: str | os.PathLike) -> dict:
    """Reads and checks an ``.npz`` of FID Inception weights into Flax variables.

    Args:
      weights_path: an ``.npz`` written by ``python -m
        scissorhands_jax.diffusion.convert_inception`` (key names in the module
        docstring).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` for :class:`FIDInceptionV3`, float32.

    Raises:
      ValueError: the file is missing or unreadable, or its keys or shapes are not those
        of the FID Inception (the message says which and how to make the file).
    """
    how = (
        f"download pytorch-fid's {FID_WEIGHTS_URL.rsplit('/', 1)[-1]} from {FID_WEIGHTS_URL} "
        "and convert it with `python -m scissorhands_jax.diffusion.convert_inception "
        "pt_inception-2015-12-05-6726825d.pth inception_fid.npz` (needs torch)"
    )
    path = os.fspath(weights_path)
    if not os.path.isfile(path):
        raise ValueError(f"FID Inception weights: no file {path!r}; {how}.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            flat = {k: npz[k] for k in npz.files}
    except Exception as err:  # zip, pickle or format errors all mean the same to the user
        raise ValueError(
            f"FID Inception weights: cannot read {path!r} as .npz ({err}); {how}."
        ) from err
    expected = expected_weight_shapes()
    missing = sorted(set(expected) - set(flat))
    extra = sorted(set(flat) - set(expected))
    if missing or extra:
        raise ValueError(
            f"FID Inception weights {path!r}: {len(missing)} missing keys "
            f"{missing[:3]}{'...' if len(missing) > 3 else ''} and {len(extra)} unexpected "
            f"keys {extra[:3]}{'...' if len(extra) > 3 else ''}; this is not a converted "
            f"FID Inception. To make one, {how}."
        )
    wrong = [(k, flat[k].shape, s) for k, s in expected.items() if flat[k].shape != s]
    if wrong:
        k, got, want = wrong[0]
        raise ValueError(
            f"FID Inception weights {path!r}: {len(wrong)} arrays have the wrong shape, "
            f"e.g. {k} is {got}, expected {want}; to make the file, {how}."
        )
    bad_dtype = [k for k, v in flat.items() if not np.issubdtype(v.dtype, np.floating)]
    if bad_dtype:
        raise ValueError(
            f"FID Inception weights {path!r}: non-float arrays, e.g. {bad_dtype[0]}; {how}."
        )
    is_stat = {k: k.rsplit("/", 1)[-1] in ("mean", "var") for k in flat}
    return {
        col: _unflatten({k: np.asarray(v, np.float32) for k, v in flat.items() if is_stat[k] == st})
        for col, st in (("params", False), ("batch_stats", True))
    }


def check_images(images: np.ndarray) -> np.ndarray:
    """Checks FID inputs: (N, H, W, 1 or 3) in [0, 1]; returns them as float32 RGB.

    Raises:
      ValueError: wrong rank or channel count, non-finite values or values outside
        [0, 1] (the message says how to map them).
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"FID Inception features want images (N, H, W, 3) or (N, H, W, 1) in [0, 1], "
            f"got shape {x.shape}; add a batch axis or move channels last."
        )
    x = x.astype(np.float32)
    if x.size and (not np.all(np.isfinite(x)) or x.min() < -1e-5 or x.max() > 1 + 1e-5):
        finite = x[np.isfinite(x)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (np.nan, np.nan)
        raise ValueError(
            f"FID Inception features want images in [0, 1], got values in [{lo}, {hi}]"
            f"{' and non-finite ones' if finite.size < x.size else ''}; map "
            "[-1, 1] images by (x + 1) / 2, uint8 ones by x / 255, and clip."
        )
    x = np.clip(x, 0.0, 1.0)  # float rounding only, after the check above
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def inception_fid_features(
    weights_path: str | os.PathLike,
    *,
    batch_size: int = 50,
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST,
) -> Callable[[np.ndarray], np.ndarray]:
    """``features(images) -> (N, 2048)``: pool3 features of the FID Inception-v3.

    The returned function takes images (N, H, W, 3) (or (N, H, W, 1), repeated to RGB)
    in [0, 1] and returns their 2048-d features as a float32 NumPy array; its output
    with :func:`~scissorhands_jax.diffusion.frechet_distance_features` is the FID of
    Heusel et al. (2017) as computed by pytorch-fid. The network is compiled once per
    input resolution and run in chunks of ``batch_size`` (fewer images: one chunk of
    them; the last chunk is padded, so no recompilation); the weights are arguments of
    the compiled program, not constants.

    Args:
      weights_path: ``.npz`` made by ``python -m
        scissorhands_jax.diffusion.convert_inception`` from pytorch-fid's
        ``pt_inception-2015-12-05-6726825d.pth`` (see :data:`FID_WEIGHTS_URL`).
      batch_size: images per compiled call.
      precision: convolution precision (see :class:`FIDInceptionV3`).

    Returns:
      ``features(images: np.ndarray) -> np.ndarray`` of shape (N, 2048), float32;
      pass it as ``fid_features=`` to
      :func:`~scissorhands_jax.experiment.generation.evaluate_generators`.

    Raises:
      ValueError: bad weights (see :func:`load_inception_variables`) or batch size;
        when called, bad images (see :func:`check_images`).

    Example (with converted weights at hand)::

        features = inception_fid_features("inception_fid.npz")
        fid = frechet_distance_features(features(generated01), features(real01))
    """
    if int(batch_size) < 1:
        raise ValueError(f"inception_fid_features: batch_size must be >= 1, got {batch_size}.")
    batch_size = int(batch_size)
    variables = jax.device_put(load_inception_variables(weights_path))
    run = jax.jit(FIDInceptionV3(precision=precision).apply)

    def features(images: np.ndarray) -> np.ndarray:
        x = check_images(images)
        out = np.zeros((len(x), FID_FEATURE_DIM), np.float32)
        size = max(min(batch_size, len(x)), 1)
        for i in range(0, len(x), size):
            chunk = x[i : i + size]
            k = len(chunk)
            if k < size:  # pad the last chunk to the compiled batch shape
                chunk = np.concatenate([chunk, np.zeros((size - k, *chunk.shape[1:]), x.dtype)])
            out[i : i + k] = np.asarray(run(variables, jnp.asarray(chunk)))[:k]
        return out

    return features
