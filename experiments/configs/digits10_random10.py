"""digits-10, random 10 % (143 of 1,437 training digits): the paper-scale commands, offline.

Reproduces: the digits-10 protocol (scikit-learn's embedded digits, no download) through
the same train / unlearn / evaluate commands as the CIFAR, SVHN and CelebA-HQ configs, so
the whole pipeline runs on any machine: Original and Retrain (SGD lr 0.05, batch 64, 30
epochs), then Scissorhands (lr 5e-3, 10 epochs, sparsity 0.97, lambda 0.05, everything
but the first conv eligible). scissorhands demo (configs/digits10.py) runs the same
protocol over three seeds; this config is one seed, with its own keys, so its numbers
match the demo's table statistically, not bit for bit.

Commands (add --smoke to each for a run of seconds):
  C=experiments/configs/digits10_random10.py RUN=runs/digits10_random10
  scissorhands train $C --out $RUN
  scissorhands unlearn $C --run $RUN
  scissorhands evaluate $C --run $RUN
  scissorhands compare --setting $C --out $RUN-compare  # all methods vs Retrain

Expected: see experiments/README.md (measured on a 2-core CPU).
"""

CONFIG = {
    "data": {
        "name": "digits10",
        "data_dir": None,
        "val_fraction": 0.0,  # the digits-10 protocol holds out no validation set
        "split_seed": 0,
        "forget": {
            "kind": "random",
            "fraction": 0.1,
            "seed": 0,
            "classes": None,
            "count": None,
            "file": None,
        },
        "augment": False,
        "image_size": None,
        "limit_train": None,
        "limit_test": None,
    },
    "model": {
        "name": "digits_cnn",
        "num_classes": 10,
        "width": 64,  # unused by the digits CNN
        "stage_sizes": None,
        "cifar_stem": None,
    },
    "train": {
        "epochs": 30,
        "lr": 0.05,
        "milestones": [],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "seed": 0,
        "checkpoint_every": 200,
        "keep": 2,
    },
    "retrain": {
        "epochs": 30,
        "lr": 0.05,
        "milestones": [],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "seed": 0,
        "checkpoint_every": 200,
        "keep": 2,
    },
    "unlearn": {
        "seed": 0,
        "batch_size": 64,
        "augment": False,
        "eligible": "all_but_first_conv",
        "sparsity": 0.97,
        "lr": 5e-3,
        "epochs": 10,
        "lam": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "prune_num": 1,
        "memory_num": 1,
        "margin": 0.5,
        "eps": 1e-3,
        "projection": "gem",
        "project_every": 1,
        "reinit": "model",
        "release_memory": False,
        "saliency_train_mode": False,
    },
    "eval": {"batch_size": 512},
}

SMOKE = {  # --smoke: two training epochs, one repair epoch
    "train": {"epochs": 2},
    "retrain": {"epochs": 2},
    "unlearn": {"epochs": 1},
}
