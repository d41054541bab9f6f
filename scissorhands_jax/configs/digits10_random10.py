"""digits-10, random 10 % (143 of 1,437 training digits): the paper-scale commands, offline.

Reproduces: the digits-10 protocol (scikit-learn's embedded digits, no download) through
the same train / unlearn / evaluate commands as the CIFAR, SVHN and CelebA-HQ configs, so
the whole pipeline runs on any machine: Original and Retrain (SGD lr 0.05, batch 64, 30
epochs), then Scissorhands (lr 5e-3, 10 epochs, sparsity 0.97, lambda 0.05, everything
but the first conv eligible). scissorhands demo (configs/digits10.py) runs the same
protocol over three seeds; this config is one seed, with its own keys, so its numbers
match the demo's table statistically, not bit for bit.

Commands (add --smoke to each for a run of seconds):
  C=digits10_random10 RUN=runs/digits10_random10
  scissorhands train $C --out $RUN
  scissorhands unlearn $C --run $RUN
  scissorhands evaluate $C --run $RUN
  scissorhands compare --setting $C --out $RUN-compare  # all methods vs Retrain

Expected: see experiments/README.md (measured on a 2-core CPU).
"""

# Only what differs from the defaults in scissorhands_jax.experiment.config; SMOKE from CONFIG.
SCHEDULE = {"epochs": 30, "lr": 0.05, "milestones": [], "batch_size": 64}
CONFIG = {
    "data": {"name": "digits10", "val_fraction": 0.0, "augment": False},
    "model": {"name": "digits_cnn", "num_classes": 10},
    "train": {**SCHEDULE, "checkpoint_every": 200, "keep": 2},
    "retrain": {**SCHEDULE, "checkpoint_every": 200, "keep": 2},
    "unlearn": {"batch_size": 64, "augment": False, "eligible": "all_but_first_conv"},
}

SMOKE = {"train": {"epochs": 2}, "retrain": {"epochs": 2}, "unlearn": {"epochs": 1}}
