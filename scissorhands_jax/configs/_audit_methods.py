"""The audit protocols' family base: what every method runs with unless tuned (not a config).

The hyperparameters of the digits comparison (one learning rate per method, tuned for the
digits CNN on a seed never reported); Scissorhands' eligible set is the protocol's (all but
the first layer of its model). `scissorhands tune` chooses others under one budget.
"""


def methods(eligible: str) -> dict:
    """The ``methods`` section of an audit protocol whose Scissorhands may re-initialise
    the parameters ``eligible`` selects (its ``eligible`` setting)."""
    return {
        "ft": {"lr": 0.1, "epochs": 10, "batch_size": 64},
        "ga": {"lr": 0.03, "epochs": 5, "batch_size": 64},
        "rl": {"lr": 0.003, "epochs": 10, "batch_size": 64},
        "l1_sparse": {"alpha": 0.03, "lr": 0.01, "epochs": 10, "batch_size": 64},
        "salun": {"ratio": 0.5, "lr": 5e-3, "epochs": 10, "batch_size": 64},
        "iu": {"alpha": 100.0, "damping": 1.0, "fisher_examples": 256, "batch_size": 64},
        "be": {"lr": 1e-4, "epochs": 10, "batch_size": 64},
        "bs": {"bound": 0.1, "lr": 1e-4, "epochs": 10, "batch_size": 64},
        "scrub": {
            "lr": 5e-3,
            "epochs": 3,
            "max_epochs": 2,
            "batch_size": 64,
            "forget_batch_size": 32,
        },
        "scissorhands": {
            "eligible": eligible,
            "lr": 1.5e-3,
            "epochs": 10,
            "sparsity": 0.97,
            "lam": 0.05,
            "memory_num": 1,
            "prune_num": 1,
            "batch_size": 64,
            "margin": 0.5,
            "eps": 1e-3,
            "projection": "gem",
            "project_every": 1,
            "reinit": "model",
        },
    }
