"""Names and bounds that the command line offers as choices, each defined once.

The library builds its tables from these constants (``baselines.METHODS`` is keyed by
:data:`METHOD_NAMES`), and the command line reads them without loading the library: this
module imports nothing, so ``scissorhands --help`` starts in a fraction of a second.
"""

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
