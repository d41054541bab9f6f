"""Evaluation metrics for machine unlearning: accuracy, the SVC MIA and the Avg. Gap."""

from scissorhands_jax.metrics._accuracy import accuracy
from scissorhands_jax.metrics._gap import avg_gap, classification_metrics
from scissorhands_jax.metrics._mia import MIA_FEATURES, mia_features, svc_mia

__all__ = [
    "MIA_FEATURES",
    "accuracy",
    "avg_gap",
    "classification_metrics",
    "mia_features",
    "svc_mia",
]
