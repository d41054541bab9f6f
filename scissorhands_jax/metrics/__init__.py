"""Evaluation metrics for machine unlearning: accuracy, the SVC and loss MIAs, the Avg. Gap,
ToW and RTE; LiRA / U-LiRA and the NeurIPS 2023 competition's forgetting quality over
model populations."""

from scissorhands_jax.metrics._accuracy import accuracy
from scissorhands_jax.metrics._audit import (
    balanced_accuracy,
    bootstrap_ci,
    lira_accuracy,
    lira_auc,
    lira_scores,
    logit_confidence,
    roc_auc,
    ulira,
)
from scissorhands_jax.metrics._forgetting import (
    attack_epsilon,
    challenge_epsilon,
    challenge_score,
    forget_quality,
    forgetting_scores,
    threshold_attack_rates,
)
from scissorhands_jax.metrics._gap import avg_gap, classification_metrics
from scissorhands_jax.metrics._loss_mia import example_losses, loss_mia
from scissorhands_jax.metrics._mia import (
    INFORMATIVE_ATTACK_AUC,
    MIA_FEATURES,
    mia_features,
    svc_attack_auc,
    svc_mia,
)
from scissorhands_jax.metrics._resampling import (
    jackknife_se,
    pair_rows,
    two_way_bootstrap,
    two_way_bootstrap_ci,
    ulira_null,
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
    "attack_epsilon",
    "avg_gap",
    "balanced_accuracy",
    "bootstrap_ci",
    "challenge_epsilon",
    "challenge_score",
    "classification_metrics",
    "evaluation_suite",
    "example_losses",
    "forget_quality",
    "forgetting_scores",
    "jackknife_se",
    "lira_accuracy",
    "lira_auc",
    "lira_scores",
    "logit_confidence",
    "loss_mia",
    "mia_features",
    "pair_rows",
    "roc_auc",
    "rte",
    "svc_attack_auc",
    "svc_mia",
    "threshold_attack_rates",
    "tow",
    "two_way_bootstrap",
    "two_way_bootstrap_ci",
    "ulira",
    "ulira_null",
]
