"""Shared fixtures: digits-10 splits and a trained original model, built once per run.

The suite runs without the command line's persistent compilation cache: a command run in
process (``cli.main``) would otherwise switch it on for every later test, and the tests
that kill processes on purpose could leave entries that later tests read. The cache's
own tests point it at a temporary directory. The test process itself (and none of the
processes it starts) keeps its compiled programs in ``.jax_test_cache`` (or
``$SCISSORHANDS_TEST_CACHE``; ``off`` turns it off: do so when running two suites at
once, since JAX writes entries in place).
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

os.environ.setdefault("SCISSORHANDS_CACHE", "off")  # before any command enables it

import jax  # noqa: E402

_TEST_CACHE = os.environ.get(
    "SCISSORHANDS_TEST_CACHE", os.path.join(os.path.dirname(__file__), "..", ".jax_test_cache")
)
if _TEST_CACHE.strip().lower() not in ("", "off", "0", "none"):
    # this process only (the subprocesses that tests start, and kill, keep it off): a
    # second run of the suite loads its compiled programs instead of compiling them
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(_TEST_CACHE))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import scissorhands_jax as shs  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after every test module. Each XLA:CPU executable
    keeps memory mappings of its code, and the whole suite in one process compiles
    thousands of programs: without this, the process passes the kernel's limit of
    65,530 mappings (``vm.max_map_count``) and segfaults inside XLA's compiler."""
    yield
    jax.clear_caches()


@pytest.fixture(scope="session")
def digits_model():
    return shs.linen_model(shs.DigitsCNN(), jnp.zeros((1, 8, 8, 1), jnp.float32))


@pytest.fixture(scope="session")
def original(digits_model):
    """The digits CNN trained on the whole training split (12 epochs: enough to fit it)."""
    split = shs.data.load_digits10("random10", 0)
    params, state = digits_model.init(jax.random.key(0))
    params, state, _ = shs.fit(
        digits_model.loss,
        params,
        state,
        shs.data.array_source(split.train, 64),
        key=jax.random.key(1),
        epochs=12,
        tx=shs.sgd(0.05),
    )
    return params, state


def accuracy_of(model, params, state, data) -> float:
    probs = shs.predict_probs(model, params, state, jnp.asarray(data["image"]))
    return float(np.mean(np.argmax(np.asarray(probs), -1) == data["label"]) * 100)


def stable_top_mask(scores, sparsity):
    """Brute force: the last N - floor(sparsity N) entries of a stable sort of all
    scores in leaf order (equal scores: the later position ranks higher)."""
    leaves, treedef = jax.tree.flatten(scores)
    flat = np.concatenate([np.ravel(np.asarray(x, np.float32)) for x in leaves])
    k = math.floor(sparsity * flat.size)
    chosen = np.zeros(flat.size, bool)
    chosen[np.argsort(flat, kind="stable")[k:]] = True
    out, start = [], 0
    for x in leaves:
        out.append(chosen[start : start + np.size(x)].reshape(np.shape(x)))
        start += np.size(x)
    return jax.tree.unflatten(treedef, out)


def count_true(mask) -> int:
    """How many entries of a boolean tree are True."""
    return sum(int(np.sum(np.asarray(m))) for m in jax.tree.leaves(mask))


REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "scissorhands_jax" / "configs"
DIGITS = str(CONFIGS / "digits10_random10.py")
DDPM = str(CONFIGS / "digits_ddpm_class0.py")
COMPARE = ["compare", "--setting", "digits10_class0", "--smoke", "--seeds", "0",
           "--set", "methods.ft.epochs=1", "--set", "methods.ga.epochs=1",
           "--no-plot", "--no-progress"]  # fmt: skip
"""A digits comparison of seconds: one config, one seed, its SMOKE schedules, one epoch."""
DEMO = ["demo", "--scenarios", "class0", "--smoke", "--no-progress"]
"""The demo on one scenario and its SMOKE schedules."""


def err_line(capsys) -> str:
    """The one line a command wrote to stderr (an assertion error if it wrote more)."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def boom(fn):
    """``fn``'s signature (a runner checks hyperparameters against it), but no work:
    finished work must not run again."""

    @functools.wraps(fn)
    def boom(*args, **kwargs):
        raise AssertionError("finished work was redone")

    return boom


_CORE_KEYWORDS = ("retain", "forget", "key", "eligible", "eval_fn")


def scissorhands_from_names(model, params, state=None, **kw):
    """``shs.scissorhands`` with its settings given by their names (``epochs=2,
    sparsity=0.9``, as in a config section) turned into the settings objects, so that
    tests read like the config sections they mirror."""
    from scissorhands_jax._settings import from_flat

    core = {k: kw.pop(k) for k in _CORE_KEYWORDS if k in kw}
    return shs.scissorhands(model, params, state, **core, **from_flat(**kw))


@pytest.fixture(scope="session")
def installed_package(tmp_path_factory):
    """The package built and installed as a user gets it (not editable, without its
    dependencies, which the test environment has): returns the folder to put first on
    ``PYTHONPATH``. Only the files a build reads are copied, so the build writes nothing
    into the clone."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    shutil.copytree(
        root / "scissorhands_jax",
        source / "scissorhands_jax",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    target = tmp_path_factory.mktemp("site")
    # pip builds the wheel in an isolated environment: the build requirements come from
    # the package index, as for a user
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--target", str(target), str(source)],
        check=True,
    )  # fmt: skip
    return target


TINY_UNET = dict(
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=1,
    attention_head_dim=4,
    cross_attention_dim=32,
    norm_num_groups=8,
)
"""Fields of a tiny SD-shaped `sd.UNetConfig` (two levels, cross-attention in one) for the
SD tests."""
