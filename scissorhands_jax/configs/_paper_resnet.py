"""The paper's ResNet-18 tables (CIFAR-10, CIFAR-100, SVHN): one family, one cell per file.

Each cell (cifar10_random10.py, ..., svhn_class0.py) is ``cell(data set, forget request,
**the release's Scissorhands values)``: Scissorhands against Retrain with ResNet-18 (CIFAR
stem), the originals trained 182 epochs at lr 0.1 (milestones 91, 136) and the oracle 160
epochs on the retain set, 10 % of each training class held out (45,000 CIFAR images
remain); SVHN without augmentation. Everything else is the default of
scissorhands_jax.experiment.config
(the release's CIFAR-10 random-10 % setting). Not a config itself.

Commands (C = the cell's file; add --smoke to each for seconds on a tiny ResNet):
  pip install ".[prepare]"    # from a clone of this repository (not on PyPI)
  scissorhands prepare cifar10 --data-dir DATA   # cifar100, svhn_cropped
  scissorhands train $C --data-dir DATA --out RUN
  scissorhands unlearn $C --data-dir DATA --run RUN
  scissorhands evaluate $C --data-dir DATA --run RUN
  scissorhands compare --setting $C --data-dir DATA --out RUN-compare  # all methods

Expected: not measured by this project (no GPU); the paper's tables report these cells.
Time: the 182 + 160 ResNet-18 epochs of the originals dominate.
"""

SCHEDULE_SMOKE = {"epochs": 2, "milestones": [1], "batch_size": 64, "checkpoint_every": 4}
SMOKE = {  # seconds on a tiny ResNet and 512 images
    "data": {"limit_train": 512, "limit_test": 256},
    "model": {"width": 8, "stage_sizes": [1, 1, 1, 1]},
    "train": SCHEDULE_SMOKE,
    "retrain": SCHEDULE_SMOKE,
    "unlearn": {"epochs": 1, "batch_size": 64},
    "eval": {"batch_size": 256},
}


def cell(dataset: str, forget: str, **unlearn) -> tuple[dict, dict]:
    """``(CONFIG, SMOKE)`` of one cell: ``dataset`` (a tfds name), ``forget``
    (``"random<percent>"`` or ``"class<c>"``) and the Scissorhands values that differ
    from the defaults."""
    data = {"name": dataset}
    if forget.startswith("class"):
        data["forget"] = {"kind": "class", "fraction": None, "classes": [int(forget[5:])]}
    elif forget != "random10":
        data["forget"] = {"fraction": int(forget.removeprefix("random")) / 100}
    if dataset == "svhn_cropped":  # digits: no crops or flips
        data["augment"] = unlearn["augment"] = False
    model = {"num_classes": 100 if dataset == "cifar100" else 10}
    return {"data": data, "model": model, "unlearn": unlearn}, SMOKE
