"""The versions record that every results file carries."""

import json
from importlib import metadata

import jax

from scissorhands_jax._versions import PACKAGES, versions


def test_versions_name_the_stack_and_the_device():
    v = versions()
    json.dumps(v)  # JSON-ready
    assert v["jax"] == jax.__version__ == metadata.version("jax")
    assert v["backend"] == jax.default_backend()
    assert v["device_kind"] == jax.devices()[0].device_kind
    assert all(name in v for name in PACKAGES)
    assert v["python"].count(".") == 2
