"""digits-10, class 0 (TA on the test set without 0s): the paper-scale commands, offline.

Reproduces: the digits-10 protocol (scikit-learn's embedded digits, no download) through
the same train / unlearn / evaluate commands as the CIFAR, SVHN and CelebA-HQ configs, so
the whole pipeline runs on any machine: digits10_random10.py with class 0 as the forget
set, with the same methods section (every baseline's digits hyperparameters).
scissorhands demo runs this config and digits10_random10.py over seeds 0, 1, 2.

Commands (add --smoke to each for a run of seconds):
  scissorhands demo --out out/digits   # both digits configs, Retrain and Scissorhands
  C=digits10_class0 RUN=runs/digits10_class0
  scissorhands train $C --out $RUN
  scissorhands unlearn $C --run $RUN
  scissorhands evaluate $C --run $RUN
  scissorhands compare --setting $C --out $RUN-compare  # all methods vs Retrain

Expected: see experiments/README.md (measured on a 2-core CPU).
"""

import digits10_random10 as base

CONFIG = {
    **base.CONFIG,
    "data": {**base.CONFIG["data"], "forget": {"kind": "class", "fraction": None, "classes": [0]}},
}
SMOKE = base.SMOKE
