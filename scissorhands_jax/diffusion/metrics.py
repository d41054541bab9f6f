"""Metrics of class forgetting in a generator, as functions of arrays.

- **Forgotten-class share**: of the samples generated for the forgotten class, the
  percentage a classifier (trained on the same data, kept with the run) assigns to that
  class. Lower is better forgetting (SalUn's "classifier evaluation" reports the mean
  probability and entropy of the same predictions; both are returned too).
- **Accuracy on the other classes**: the percentage of samples generated for each other
  class that the classifier assigns to the conditioning class (generation quality kept).
- **Fréchet distance** between generated and real images in a feature space. Offline,
  the classifier's penultimate features (:func:`feature_extractor`); with the FID
  Inception weights at hand, :func:`inception_fid_features` gives their 2048-d pool3
  features instead and it is the usual FID (Heusel et al., NeurIPS 2017), as
  pytorch-fid computes it::

      fid_features = inception_fid_features("inception_fid.npz")  # see inception.py
      fid = frechet_distance_features(fid_features(generated01), fid_features(real01))
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax.diffusion.inception import inception_fid_features

__all__ = [
    "feature_extractor",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_features",
    "generation_metrics",
    "inception_fid_features",
]


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``features`` (N, D), in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {f.shape}.")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    r"""Fréchet distance between :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)`:

    .. math::
        d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(\Sigma_1 + \Sigma_2
              - 2 (\Sigma_1^{1/2} \Sigma_2 \Sigma_1^{1/2})^{1/2}\big)

    :math:`\operatorname{tr}(\Sigma_1\Sigma_2)^{1/2}` is computed as the trace of the
    symmetric square root above (same eigenvalues), by two symmetric eigen-decompositions:
    no complex parts and no ``sqrtm`` iterations.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(
            f"frechet_distance: shapes disagree: mu {mu1.shape} / {mu2.shape}, "
            f"sigma {s1.shape} / {s2.shape}."
        )
    root1 = _psd_sqrt(s1)
    cross = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_cross = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_cross)


def frechet_distance_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """:func:`frechet_distance` between the Gaussians fitted to two feature sets."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def feature_extractor(
    module: nn.Module,
    *,
    layer: str,
    activation: Callable[[jax.Array], jax.Array] | None = jax.nn.relu,
    batch_size: int = 1024,
    **apply_kwargs,
) -> Callable[[dict, jax.Array], np.ndarray]:
    """``features(variables, x) -> (N, D)``: the output of the submodule named ``layer``
    of a Linen classifier (through ``capture_intermediates``), passed through
    ``activation`` and flattened per example; compiled once, run in chunks of
    ``batch_size``.

    For :class:`~scissorhands_jax.DigitsCNN`, ``layer="Dense_0"`` with ReLU gives the
    128-d penultimate features.

    Raises:
      ValueError: (when called) no submodule called ``layer`` ran.
    """

    @jax.jit
    def run(variables, chunk):
        _, state = module.apply(
            variables,
            chunk,
            capture_intermediates=lambda mdl, _: mdl.name == layer,
            mutable=["intermediates"],
            **apply_kwargs,
        )
        found = state.get("intermediates", {}).get(layer)
        if found is None:
            raise ValueError(
                f"feature_extractor: the module has no submodule named {layer!r}; its "
                f"top-level submodules are {sorted(variables.get('params', {}))}."
            )
        out = found["__call__"][0]
        out = activation(out) if activation is not None else out
        return out.reshape(out.shape[0], -1)

    def features(variables: dict, x: jax.Array) -> np.ndarray:
        chunks = [
            np.asarray(run(variables, jnp.asarray(x[i : i + batch_size])))
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(chunks)

    return features


def generation_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    forget_class: int,
    *,
    generated_features: np.ndarray | None = None,
    real_features: np.ndarray | None = None,
) -> dict[str, float]:
    """Class-forgetting metrics of generated samples (percentages where noted).

    Args:
      probs: (N, K) classifier probabilities of the generated samples.
      labels: (N,) the class each sample was generated for.
      forget_class: the forgotten class.
      generated_features, real_features: optional features of the samples generated
        for the *other* classes and of real images of those classes, for the Fréchet
        distance (Inception pool3 features from :func:`inception_fid_features` make it
        the FID).

    Returns:
      ``forget_share`` (% of forget-class samples classified as it), ``forget_prob``
      (their mean probability of it), ``forget_entropy`` (mean predictive entropy, nats),
      ``other_acc`` (% of the other samples classified as their conditioning class), and
      ``frechet`` when features are given.

    Raises:
      ValueError: no sample for the forgotten class or for the others.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    is_f = labels == forget_class
    if not is_f.any() or is_f.all():
        raise ValueError(
            "generation_metrics: need samples generated for the forgotten class and for "
            "at least one other class."
        )
    pred = probs.argmax(-1)
    pf = probs[is_f]
    out = {
        "forget_share": float(np.mean(pred[is_f] == forget_class) * 100),
        "forget_prob": float(np.mean(pf[:, forget_class])),
        "forget_entropy": float(np.mean(-np.sum(pf * np.log(np.clip(pf, 1e-12, None)), -1))),
        "other_acc": float(np.mean(pred[~is_f] == labels[~is_f]) * 100),
    }
    if generated_features is not None and real_features is not None:
        out["frechet"] = frechet_distance_features(generated_features, real_features)
    return out
