"""The legends printed under the commands' tables: what each column is and which way is
better, so a printed table can be read without the documentation."""

from __future__ import annotations

CLASSIFIER = """\
UA = 100 - accuracy on the forget set; RA / TA = accuracy on the retain / test set
(class-wise forgetting: the test set without the forgotten class). MIA_entropy and
MIA_confidence = % of the forget set that the SVC membership attack (entropy or confidence
feature) calls non-member. MIA_entropy_attack_auc = that attack's own AUC for members vs
non-members it did not train on: 0.5 means it learned nothing, and below 0.55 (marked †)
its MIA value is noise. MIA_loss = the same % for an attack on the per-example losses.
Retrain, trained from scratch without the forget set, is the reference: for UA, RA, TA
and MIA the best value is the one closest to Retrain's. avg_gap = mean |method - Retrain|
over UA, RA, TA and MIA_entropy (lower is better; Retrain's own is 0). ToW = product over
the forget, retain and test sets of (1 - |accuracy difference to Retrain|) (higher is
better; Retrain's own is 1). rte_s = wall-clock seconds of training / unlearning, XLA
compilation included (lower is better). All in %, except avg_gap (points), ToW and the
attack AUC (0 to 1) and rte_s."""

DIFFUSION = """\
forget share = % of the samples generated for the forgotten class that the judge
classifier calls that class (lower = more forgotten; Retrain, which never saw the class,
is the reference); forget prob = the judge's mean probability of the forgotten class on
those samples (lower); other acc = % of the samples of the other classes that the judge
assigns to their conditioning class (higher is better); Frechet = distance between those
samples and the real images of the other classes in the judge's penultimate features, fid
the same in Inception-v3 features (lower is closer); time / rte_s = wall-clock seconds of
the method, compilation included (lower is better)."""


def under(table: str, legend: str) -> str:
    """``table``, a blank line and ``legend``."""
    return f"{table}\n\n{legend}"
