"""Evaluation metrics for machine unlearning: accuracy, the SVC and loss MIAs, the Avg. Gap,
ToW and RTE."""

from scissorhands_jax.metrics._accuracy import accuracy
from scissorhands_jax.metrics._gap import avg_gap, classification_metrics
from scissorhands_jax.metrics._loss_mia import example_losses, loss_mia
from scissorhands_jax.metrics._mia import (
    INFORMATIVE_ATTACK_AUC,
    MIA_FEATURES,
    mia_features,
    svc_attack_auc,
    svc_mia,
)
from scissorhands_jax.metrics._rte import rte
from scissorhands_jax.metrics._suite import against_retrain, evaluation_suite
from scissorhands_jax.metrics._tow import TOW_KEYS, tow

__all__ = [
    "INFORMATIVE_ATTACK_AUC",
    "MIA_FEATURES",
    "TOW_KEYS",
    "accuracy",
    "against_retrain",
    "avg_gap",
    "classification_metrics",
    "evaluation_suite",
    "example_losses",
    "loss_mia",
    "mia_features",
    "rte",
    "svc_attack_auc",
    "svc_mia",
    "tow",
]
