"""Every lower bound in pyproject.toml is pinned in .ci/floors.txt (which CI installs and
tests), and the environment agrees with what it was installed from."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_canonical(name)] = Version(version)
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _bounds() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"]]
    for extra, reqs in extras.items():
        # prepare: TensorFlow, only to download data, not installed in CI; sd, sd-test:
        # Stable Diffusion and its reference stack, installed beside the latest versions only;
        # sd-eval: the NudeNet detector, not installed in CI
        if extra not in ("prepare", "sd", "sd-test", "sd-eval"):
            requirements += reqs
    bounds = {}
    for text in requirements:
        req = Requirement(text)
        (low,) = [Version(s.version) for s in req.specifier if s.operator == ">="]
        bounds[_canonical(req.name)] = max(low, bounds.get(_canonical(req.name), low))
    return bounds


def test_every_lower_bound_is_pinned_exactly():
    floors = _floors()
    # jaxlib is not ours to bound (jax requires it); it is pinned to jax's floor so that
    # the floor run cannot resolve a newer one.
    assert floors.pop("jaxlib") == floors["jax"]
    assert _bounds() == floors


def _docs_only() -> set[str]:
    """The packages that only the docs extra brings (optional for the test suite)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    others = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    docs = project["optional-dependencies"]["docs"]
    named = lambda reqs: {_canonical(Requirement(r).name) for r in reqs}  # noqa: E731
    return named(docs) - named(others)


def test_installed_versions_satisfy_the_floors():
    # Equality in the floor environment of .ci/run; at least the floor everywhere else.
    docs_only = _docs_only()
    for name, low in _floors().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name in docs_only:  # pip install -e ".[test]" alone: no docs extra
                continue
            raise
        assert Version(installed) >= low, name
