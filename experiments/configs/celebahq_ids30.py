"""CelebA-HQ, identity-wise forgetting of 30 of 307 identities, ResNet-34 at 224 px.

Reproduces: the paper's CelebA-HQ identity setting with the release's hyperparameters: a ResNet-34
(ImageNet stem) classifies 307 identities; Scissorhands forgets every training image of 30
identities drawn with seed 0 (they are also dropped from the test set for TA): batch 8,
lr 2e-4, 5 epochs, sparsity 0.95, lambda 0.5, eligible layer4, fc, projection on every
10th joint step.

Data: CelebA-HQ cannot be downloaded by a script. Build ROOT/train/<identity>/*.jpg and
ROOT/test/<identity>/*.jpg from your copy (see scissorhands_jax/data/celeba_folder.py);
there is no prepare step.

Commands (add --smoke to each for a run of seconds on a tiny ResNet and 64 images):
  C=experiments/configs/celebahq_ids30.py RUN=runs/celebahq_ids30
  scissorhands train $C --data-dir ROOT --out $RUN
  scissorhands unlearn $C --data-dir ROOT --run $RUN
  scissorhands evaluate $C --data-dir ROOT --run $RUN
  scissorhands compare --setting $C --data-dir ROOT --out $RUN-compare  # all methods vs Retrain

The paper does not state the schedule of the original and retrained ResNet-34; the
"train"/"retrain" values below are this project's choice, not the
release's. Expected: not measured by this project (no GPU and no CelebA-HQ copy).
"""

CONFIG = {
    "data": {
        "name": "celeba_folder",
        "data_dir": None,  # --data-dir ROOT
        "val_fraction": 0.1,
        "split_seed": 0,
        "forget": {
            "kind": "identity",
            "fraction": None,
            "seed": 0,
            "classes": None,  # or an explicit list of identity labels
            "count": 30,
            "file": None,
        },
        "augment": True,  # random horizontal flip (faces)
        "image_size": 224,
        "limit_train": None,
        "limit_test": None,
    },
    "model": {
        "name": "resnet34",  # ImageNet stem: 7x7 stride-2 conv and 3x3 max-pool
        "num_classes": 307,
        "width": 64,
        "stage_sizes": None,
        "cifar_stem": None,
    },
    "train": {  # this project's choice (see above)
        "epochs": 60,
        "lr": 0.01,
        "milestones": [30, 45],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "seed": 0,
        "checkpoint_every": 500,
        "keep": 3,
    },
    "retrain": {
        "epochs": 60,
        "lr": 0.01,
        "milestones": [30, 45],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "seed": 0,
        "checkpoint_every": 500,
        "keep": 3,
    },
    "unlearn": {  # Scissorhands (the release's hyperparameters)
        "seed": 0,
        "batch_size": 8,
        "augment": True,
        "eligible": "layer4,fc",
        "sparsity": 0.95,
        "lr": 2e-4,
        "epochs": 5,
        "lam": 0.5,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "prune_num": 1,
        "memory_num": 1,
        "margin": 0.5,
        "eps": 1e-3,
        "projection": "gem",
        "project_every": 10,
        "reinit": "model",
        "release_memory": False,
        "saliency_train_mode": False,
    },
    "eval": {"batch_size": 64},
}

SMOKE = {  # --smoke: 64 px, a tiny ResNet, the first 64 / 32 images, a few steps
    "data": {"image_size": 64, "limit_train": 64, "limit_test": 32, "forget": {"count": 2}},
    "model": {"width": 4, "stage_sizes": [1, 1, 1, 1]},
    "train": {"epochs": 1, "milestones": [], "batch_size": 16, "checkpoint_every": 2},
    "retrain": {"epochs": 1, "milestones": [], "batch_size": 16, "checkpoint_every": 2},
    "unlearn": {"epochs": 1, "batch_size": 8, "project_every": 1},
    "eval": {"batch_size": 32},
}
