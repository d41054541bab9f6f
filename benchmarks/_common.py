"""What the benchmark scripts share: the machine record and the ResNet-18 repair setup.

Run as ``python benchmarks/<name>.py``: the scripts' folder is on ``sys.path``, so they
import this module as ``_common``. Nothing here imports JAX at module level, so scripts
that set ``XLA_FLAGS`` before JAX starts can import it first.
"""

from __future__ import annotations

import os
import platform
from typing import Any


def machine(**extra: Any) -> dict:
    """Platform, CPU count, devices, JAX version and the load average at the start (these
    machines are shared: the load says how noisy a figure is), plus ``extra``."""
    import jax

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        **extra,
        "load_average_at_start": os.getloadavg(),
    }


def resnet18_repair_setup(width: int = 64):
    """The CIFAR-10 setting's pieces for timing repair steps on ResNet-18 (32x32 inputs):
    ``(model, params, state, eligible, gem_tx)``, with ``eligible`` the ``layer3, layer4,
    fc`` mask and ``gem_tx`` the repair optimiser (GEM, margin 0.5, eps 1e-3, lr 5e-3,
    momentum 0.9, weight decay 5e-4) as :func:`scissorhands_jax.repair_tx` builds it.
    ``width`` is the first stage's channels (64: ResNet-18; smaller for smoke runs)."""
    import jax
    import jax.numpy as jnp

    import scissorhands_jax as shs

    model = shs.linen_model(
        shs.models.resnet18(width=width), jnp.zeros((1, 32, 32, 3), jnp.float32)
    )
    params, state = model.init(jax.random.key(0))
    eligible = shs.eligible_mask(params, "layer3,layer4,fc")
    tx = shs.repair_tx(eligible)  # the default settings: GEM, lr 5e-3, momentum 0.9, wd 5e-4
    return model, params, state, eligible, tx
