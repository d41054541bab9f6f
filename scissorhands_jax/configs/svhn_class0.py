"""SVHN, class 0 forgetting, ResNet-18: a cell of the paper's SVHN class-wise table.

Reproduces: Scissorhands against Retrain with every training image of class 0 (TA on the
test set without it) forgotten, at the release's values below. Commands and expected
time: _paper_resnet.py, with C=svhn_class0 (scissorhands train
$C, unlearn $C, evaluate $C).
"""

from _paper_resnet import cell

CONFIG, SMOKE = cell("svhn_cropped", "class0", eligible="layer4,fc", sparsity=0.9, lr=1e-3, lam=0.1)
