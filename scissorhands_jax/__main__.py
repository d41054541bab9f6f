"""``python -m scissorhands_jax``: the ``scissorhands`` command line."""

import sys

from scissorhands_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
