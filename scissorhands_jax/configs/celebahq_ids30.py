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
  C=celebahq_ids30 RUN=runs/celebahq_ids30
  scissorhands train $C --data-dir ROOT --out $RUN
  scissorhands unlearn $C --data-dir ROOT --run $RUN
  scissorhands evaluate $C --data-dir ROOT --run $RUN
  scissorhands compare --setting $C --data-dir ROOT --out $RUN-compare  # all methods vs Retrain

The paper does not state the schedule of the original and retrained ResNet-34; the
"train"/"retrain" values below are this project's choice, not the
release's. Expected: not measured by this project (no GPU and no CelebA-HQ copy).
"""

# Only what differs from the defaults in scissorhands_jax.experiment.config; SMOKE from CONFIG.
SCHEDULE = {"epochs": 60, "lr": 0.01, "milestones": [30, 45], "batch_size": 64}
CONFIG = {
    "data": {
        "name": "celeba_folder",
        "forget": {"kind": "identity", "fraction": None, "count": 30},
        "image_size": 224,
    },
    "model": {"name": "resnet34", "num_classes": 307},
    "train": {**SCHEDULE, "checkpoint_every": 500},
    "retrain": {**SCHEDULE, "checkpoint_every": 500},
    "unlearn": {
        "batch_size": 8,
        "eligible": "layer4,fc",
        "sparsity": 0.95,
        "lr": 0.0002,
        "epochs": 5,
        "lam": 0.5,
        "project_every": 10,
    },
    "eval": {"batch_size": 64},
}

SMOKE_SCHEDULE = {"epochs": 1, "milestones": [], "batch_size": 16, "checkpoint_every": 2}
SMOKE = {
    "data": {"image_size": 64, "limit_train": 64, "limit_test": 32, "forget": {"count": 2}},
    "model": {"width": 4, "stage_sizes": [1, 1, 1, 1]},
    "train": SMOKE_SCHEDULE,
    "retrain": SMOKE_SCHEDULE,
    "unlearn": {"epochs": 1, "project_every": 1},
    "eval": {"batch_size": 32},
}
