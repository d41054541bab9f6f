"""SVHN, random 10 % forgetting, ResNet-18 (the paper's SVHN table).

Reproduces: Scissorhands against Retrain on SVHN (tfds svhn_cropped, 73,257 training
images, 10 % per class held out) with a random 10 % forget set: lr 1e-3, 10 epochs,
sparsity 0.90, lambda 0.01, eligible layer3, layer4, fc, projection on every joint
step (the release's hyperparameters). The originals use the CIFAR schedule.

Commands (add --smoke to each for a run of seconds on a tiny ResNet and 512 images):
  pip install ".[prepare]"    # from a clone of this repository (not on PyPI)
  scissorhands prepare svhn_cropped --data-dir DATA
  C=experiments/configs/svhn_random10.py RUN=runs/svhn_random10
  scissorhands train $C --data-dir DATA --out $RUN
  scissorhands unlearn $C --data-dir DATA --run $RUN
  scissorhands evaluate $C --data-dir DATA --run $RUN
  scissorhands compare --setting $C --data-dir DATA --out $RUN-compare  # all methods vs Retrain

Expected:  not measured by this project (its machines have no GPU); the paper's
           Table reports this setting. Time: 182 + 160 ResNet-18 epochs dominate.
"""

CONFIG = {
    "data": {
        "name": "svhn_cropped",
        "data_dir": None,  # --data-dir DATA (tfds data directory)
        "val_fraction": 0.1,  # 10 % of each class of train held out, as in the release
        "split_seed": 0,
        "forget": {
            "kind": "random",
            "fraction": 0.1,
            "seed": 0,
            "classes": None,
            "count": None,
            "file": None,
        },
        "augment": False,  # SVHN: none (digits must not be mirrored)
        "image_size": None,
        "limit_train": None,
        "limit_test": None,
    },
    "model": {
        "name": "resnet18",  # CIFAR stem: 3x3 conv, no max-pool
        "num_classes": 10,
        "width": 64,
        "stage_sizes": None,
        "cifar_stem": None,
    },
    "train": {  # the original model: retain + forget (the release: 182 epochs, lr 0.1, 91/136)
        "epochs": 182,
        "lr": 0.1,
        "milestones": [91, 136],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 256,
        "seed": 0,
        "checkpoint_every": 1000,
        "keep": 3,
    },
    "retrain": {  # the oracle: retain only (the release: 160 epochs, lr 0.1, same milestones)
        "epochs": 160,
        "lr": 0.1,
        "milestones": [91, 136],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 256,
        "seed": 0,
        "checkpoint_every": 1000,
        "keep": 3,
    },
    "unlearn": {  # Scissorhands (the release's hyperparameters)
        "seed": 0,
        "batch_size": 256,
        "augment": False,
        "eligible": "layer3,layer4,fc",
        "sparsity": 0.9,
        "lr": 1e-3,
        "epochs": 10,
        "lam": 0.01,
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

SMOKE = {  # --smoke: a tiny ResNet on the first 512 / 256 images, a few steps of each phase
    "data": {"limit_train": 512, "limit_test": 256},
    "model": {"width": 8, "stage_sizes": [1, 1, 1, 1]},
    "train": {"epochs": 2, "milestones": [1], "batch_size": 64, "checkpoint_every": 4},
    "retrain": {"epochs": 2, "milestones": [1], "batch_size": 64, "checkpoint_every": 4},
    "unlearn": {"epochs": 1, "batch_size": 64},
    "eval": {"batch_size": 256},
}
