"""Names and bounds that the command line offers as choices, each defined once.

The library builds its tables from these (``baselines.METHODS`` is keyed by
:data:`METHOD_NAMES`, the config loader finds configs by :func:`config_names`), and the
command line reads them without loading the library: this module imports only
``pathlib``, so ``scissorhands --help`` starts in a fraction of a second.
"""

from pathlib import Path

METHOD_NAMES = (
    "retrain",
    "ft",
    "ga",
    "rl",
    "l1_sparse",
    "salun",
    "iu",
    "be",
    "bs",
    "scrub",
    "scissorhands",
)
"""The unlearning methods of the comparison, in the order of its tables."""

SEED_LIMIT = 2**31
"""Seeds are integers in ``[0, SEED_LIMIT)``, on the command line, in configs and in the
library. A JAX key holds 32 bits of seed (``jax.random.key(2**32)`` is
``jax.random.key(0)``, ``key(-1)`` is ``key(2**32 - 1)``), and the package derives further
keys as ``seed + offset`` with offsets in the thousands, so seeds below :math:`2^{31}` stay
distinct keys; NumPy's ``default_rng`` takes them too."""

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The experiment configs installed with the package, one per paper table cell."""


def config_names() -> list[str]:
    """The names of the installed configs (file stems; ``_``-prefixed family bases left out)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))
