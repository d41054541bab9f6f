"""The FID Inception-v3: features, weight files and their conversion, input checks, and
(where torch and pytorch-fid are installed) equality with pytorch-fid's network."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scissorhands_jax.diffusion import inception as inc
from scissorhands_jax.diffusion import metrics
from scissorhands_jax.diffusion.convert_inception import convert_checkpoint, convert_state_dict


def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-scaled kernels and BatchNorm statistics near the identity: activations stay O(1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in inc.expected_weight_shapes().items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf == "kernel":
            out[key] = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:3])), shape)
        elif leaf == "scale":
            out[key] = rng.uniform(0.5, 1.5, shape)
        elif leaf in ("bias", "mean"):
            out[key] = rng.normal(0.0, 0.1, shape)
        else:
            out[key] = rng.uniform(0.5, 2.0, shape)
    return {k: v.astype(np.float32) for k, v in out.items()}


def to_torch_layout(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of the converter: pytorch-fid ``.pth`` names and (out, in, kh, kw)."""
    names = {"kernel": "weight", "scale": "weight", "bias": "bias"}
    names |= {"mean": "running_mean", "var": "running_var"}
    out = {}
    for key, a in arrays.items():
        path, leaf = key.rsplit("/", 1)
        out[f"{path.replace('/', '.')}.{names[leaf]}"] = (
            a.transpose(3, 2, 0, 1) if a.ndim == 4 else a
        )
    return out


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception_fid.npz"
    np.savez(path, **random_weights())
    return path


@pytest.fixture(scope="module")
def features(weights_file):
    return inc.inception_fid_features(weights_file, batch_size=2)


def images(n, size=32, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, channels)).astype(np.float32)


# ---------------------------------------------------------------- features


def test_features_shape_dtype_and_determinism(features):
    x = images(2)
    f = features(x)
    assert f.shape == (2, inc.FID_FEATURE_DIM) and f.dtype == np.float32
    assert np.all(np.isfinite(f)) and f.min() >= 0.0  # a mean of ReLU outputs
    assert f.std() > 1e-3 and not np.allclose(f[0], f[1])  # not a constant map
    np.testing.assert_array_equal(features(x), f)
    np.testing.assert_array_equal(features(x[:, :, :, :1]), features(np.repeat(x[..., :1], 3, -1)))


def test_features_batching_pads_the_last_chunk(features):
    x = images(3, seed=1)
    f3 = features(x)  # chunks of 2: the third image runs beside a zero image
    np.testing.assert_allclose(f3[:2], features(x[:2]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f3[2], features(x[1:])[1], rtol=1e-5, atol=1e-6)
    assert features(x[:0]).shape == (0, inc.FID_FEATURE_DIM)


def test_metrics_exports_the_inception_features():
    assert metrics.inception_fid_features is inc.inception_fid_features


def test_resize_is_torch_bilinear_without_antialias():
    """Against a NumPy transcription of ``F.interpolate(mode="bilinear",
    align_corners=False)``: source coordinate (i + 0.5) * in / out - 0.5, clamped,
    computed in float32 as torch does (in float64 a shrink differs by ~3e-5)."""

    def axis_weights(n_in, n_out):
        scale = np.float32(n_in / n_out)
        src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * scale - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        w = np.zeros((n_out, n_in))
        np.add.at(w, (np.arange(n_out), i0), 1.0 - (src - i0))
        np.add.at(w, (np.arange(n_out), i1), src - i0)
        return w

    for h, w in ((7, 5), (400, 333)):  # enlarging and shrinking
        x = np.random.default_rng(h).uniform(0, 1, (1, h, w, 2))
        want = np.einsum("ph,nhwc->npwc", axis_weights(h, 299), x)
        want = np.einsum("qw,npwc->npqc", axis_weights(w, 299), want)
        got = np.asarray(inc.fid_resize(jnp.asarray(x, jnp.float32)))
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_average_pools_leave_the_padding_out():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    pooled = np.asarray(inc._avg_pool_3x3(x))[0, :, :, 0]
    assert pooled[0, 0] == np.mean([0, 1, 4, 5])
    assert pooled[1, 1] == np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10])


# ---------------------------------------------------------------- weight files


def test_npz_round_trip_and_converter_names(weights_file):
    arrays = random_weights()
    variables = inc.load_inception_variables(weights_file)
    assert set(variables) == {"params", "batch_stats"}
    np.testing.assert_array_equal(
        variables["params"]["Mixed_7c"]["branch_pool"]["conv"]["kernel"],
        arrays["Mixed_7c/branch_pool/conv/kernel"],
    )
    np.testing.assert_array_equal(
        variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"], arrays["Conv2d_1a_3x3/bn/var"]
    )
    # the .pth names, with the classifier and counters the converter drops
    pth = to_torch_layout(arrays)
    pth["fc.weight"], pth["fc.bias"] = np.zeros((1008, 2048)), np.zeros(1008)
    pth["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.zeros(())
    back = convert_state_dict(pth)
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    # pytorch-fid's InceptionV3 wrapper names its blocks by position
    wrapped = {
        k.replace("Conv2d_1a_3x3.", "blocks.0.0.").replace("Mixed_7c.", "blocks.3.2."): v
        for k, v in pth.items()
    }
    assert set(convert_state_dict(wrapped)) == set(arrays)


def test_bad_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no file.*pt_inception-2015-12-05"):
        inc.load_inception_variables(tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        inc.load_inception_variables(tmp_path / "text.npz")
    arrays = random_weights()
    short = dict(arrays)
    short.pop("Mixed_6a/branch3x3/conv/kernel")
    np.savez(tmp_path / "short.npz", **short, extra=np.zeros(3))
    with pytest.raises(ValueError, match="1 missing keys.*Mixed_6a.*1 unexpected.*convert_inc"):
        inc.load_inception_variables(tmp_path / "short.npz")
    arrays["Mixed_5b/branch1x1/bn/scale"] = np.zeros(65, np.float32)
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(ValueError, match=r"wrong shape.*Mixed_5b/branch1x1/bn/scale is \(65,\)"):
        inc.inception_fid_features(tmp_path / "shape.npz")
    with pytest.raises(ValueError, match="batch_size"):
        inc.inception_fid_features(tmp_path / "shape.npz", batch_size=0)

    pth = to_torch_layout(random_weights())
    pth.pop("Mixed_7a.branch3x3_2.conv.weight")
    pth["AuxLogits.fc.weight"] = np.zeros((1000, 768))
    with pytest.raises(ValueError, match="1 weights missing.*1 unexpected.*AuxLogits"):
        convert_state_dict(pth)
    pth = to_torch_layout(random_weights())
    pth["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 1, 3, 3))
    with pytest.raises(ValueError, match="Conv2d_1a_3x3.conv.weight has shape"):
        convert_state_dict(pth)


def test_converter_without_torch_says_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ValueError, match="needs torch"):
        convert_checkpoint(tmp_path / "x.pth", tmp_path / "x.npz")


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((32, 32, 3)), "shape"),
        (np.zeros((1, 32, 32, 4)), "shape"),
        (np.full((1, 8, 8, 3), -0.5), r"in \[0, 1\].*\(x \+ 1\) / 2"),
        (np.full((1, 8, 8, 3), 255.0), "x / 255"),
        (np.full((1, 8, 8, 3), np.nan), "non-finite"),
    ],
)
def test_bad_images_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        inc.check_images(bad)


# ---------------------------------------------------------------- against pytorch-fid


def test_matches_pytorch_fid(tmp_path, monkeypatch):
    """pytorch-fid's ``InceptionV3([3], resize_input=True, normalize_input=True)`` with
    random weights (its download replaced by them), through our converter: same
    features."""
    torch = pytest.importorskip("torch")
    fid_inception = pytest.importorskip("pytorch_fid.inception")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    shapes = ((3, 40, 56, 3), (2, 320, 301, 3))  # enlarged and shrunk to 299

    def to_299(x):  # what pytorch-fid does to its inputs
        x = torch.from_numpy(x.transpose(0, 3, 1, 2))
        return torch.nn.functional.interpolate(x, (299, 299), mode="bilinear") * 2 - 1

    with monkeypatch.context() as m:  # the architecture only, no download
        m.setattr(fid_inception, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(torch.nn.Module, "load_state_dict", lambda *a, **k: None)
        net = fid_inception.fid_inception_v3()
    bns = [mod for mod in net.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # running stats = the mean over the calibration batch
        net.train()  # calibrate on images like the test's: activations stay O(1)
        net(torch.cat([to_299(rng.uniform(0, 1, s).astype(np.float32)) for s in shapes]))
    pth = tmp_path / "pt_inception-random.pth"
    torch.save(net.state_dict(), pth)

    with monkeypatch.context() as m:  # pytorch-fid's own loading path, on that file
        m.setattr(
            fid_inception,
            "load_state_dict_from_url",
            lambda *a, **k: torch.load(pth, weights_only=True),
        )
        ref = fid_inception.InceptionV3(
            [3], resize_input=True, normalize_input=True, use_fid_inception=True
        ).eval()

    npz = convert_checkpoint(pth, tmp_path / "inception_fid.npz")
    ours = inc.inception_fid_features(npz, batch_size=3)
    wrapped = convert_state_dict(ref.state_dict())  # the wrapper's names convert too
    with np.load(npz) as saved:
        for k, v in wrapped.items():
            np.testing.assert_array_equal(saved[k], v)

    variables = inc.load_inception_variables(npz)
    for shape in shapes:
        x = rng.uniform(0, 1, shape)
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
        with torch.no_grad():
            want32 = ref.float()(xt.float())[0].numpy()[:, :, 0, 0]
            want = ref.double()(xt)[0].numpy()[:, :, 0, 0]
        # in float64 on both sides the two networks are the same function
        with jax.enable_x64(True):
            v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
            got64 = np.asarray(jax.jit(inc.FIDInceptionV3().apply)(v64, jnp.asarray(x)))
        np.testing.assert_allclose(got64, want, rtol=1e-9, atol=1e-9)
        # in float32, as used: as far from that as pytorch-fid's own float32 is (this
        # random network amplifies float32 rounding, even of the input, to ~1e-3 of
        # max |f|), and close to pytorch-fid's float32 features
        got = ours(x.astype(np.float32))
        scale = np.abs(want).max()
        err, err_torch = np.abs(got - want).max(), np.abs(want32 - want).max()
        print(
            f"\n{shape}: max |f| {scale:.3g}; float64: max |ours - pytorch-fid| "
            f"{np.abs(got64 - want).max():.3g}; float32, against pytorch-fid in float64: "
            f"ours {err:.3g} ({err / scale:.2g} of max |f|), pytorch-fid's "
            f"{err_torch:.3g} ({err_torch / scale:.2g}); ours - pytorch-fid in float32: "
            f"{np.abs(got - want32).max():.3g}"
        )
        assert want.std() > 1e-2  # informative features, not a collapsed network
        assert err <= 1.5 * err_torch + 1e-5 * scale
        np.testing.assert_allclose(got, want32, rtol=0, atol=2.5e-4 * scale)


def test_commands_build_the_inception_features_from_the_flag(weights_file, tmp_path):
    """``--inception-weights`` (diffusion-evaluate, generate-demo) gives the same features as
    the library call; bad combinations fail before any sampling."""
    from scissorhands_jax.commands.diffusion_evaluate import feature_function

    got = feature_function(None, str(weights_file))
    x = images(2, size=16)
    np.testing.assert_array_equal(got(x), inc.inception_fid_features(weights_file)(x))
    with pytest.raises(ValueError, match="not both"):
        feature_function("numpy:mean", str(weights_file))
    with pytest.raises(ValueError):
        feature_function(None, str(tmp_path / "missing.npz"))
    assert feature_function(None, None) is None
