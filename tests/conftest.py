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

import os

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


_CORE_KEYWORDS = ("retain", "forget", "key", "eligible", "eval_fn")


def scissorhands_flat(model, params, state=None, **kw):
    """``shs.scissorhands`` with flat settings (``epochs=2, sparsity=0.9``) turned into the
    settings objects, so that tests read like the config sections they mirror."""
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
