"""The settings of the method, as small frozen dataclasses: the only copy of each default.

:func:`scissorhands_jax.scissorhands` takes one of each; the defaults are the release's
CIFAR-10 random-10 % setting. Every value is checked when the dataclass is built, so a
bad setting fails before any work is done.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from scissorhands_jax.precision import check_precision

REINITS = ("model", "torch", "trunc_normal")
"""Where fresh values come from: the model's own initialisers, PyTorch's default
kaiming-uniform (release parity), or ``trunc_normal_(std=0.02)`` (the release's
diffusion class recipe)."""

PROJECTIONS = ("gem", "orthogonal", "orthogonal_on_conflict", "none")
"""The projections of the repair step (see :mod:`scissorhands_jax.projection`)."""


def check_int(name: str, value: Any, low: int) -> None:
    """Raises ValueError unless ``value`` is an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def check_real(name: str, value: Any, *, positive: bool = False) -> None:
    """Raises ValueError unless ``value`` is a finite real number (> 0 with ``positive``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}.")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raises ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def check_sparsity(sparsity: Any) -> None:
    """Raises ValueError unless ``sparsity`` is a real number in the open interval (0, 1)."""
    real = isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool)
    if not real or not 0.0 < float(sparsity) < 1.0:
        raise ValueError(
            f"sparsity must be a number in the open interval (0, 1), got {sparsity!r}; "
            "it is the fraction of parameters kept (0.97 re-initialises the top 3 %)."
        )


@dataclasses.dataclass(frozen=True)
class TrimSettings:
    """Phase 1: saliency, global top-k, masked re-initialisation.

    Attributes:
      sparsity: fraction of parameters kept; 0.97 re-initialises the top 3 %.
      prune_num: forget batches in the saliency.
      reinit: where fresh values come from (:data:`REINITS`).
      saliency_train_mode: compute the saliency with the model in training mode.
      update_stats: with ``saliency_train_mode``, keep the running statistics that the
        saliency's forward passes move (the release's behaviour on BatchNorm networks);
        off: the statistics are those of the trained model.
    """

    sparsity: float = 0.97
    prune_num: int = 1
    reinit: str = "model"
    saliency_train_mode: bool = False
    update_stats: bool = False

    def __post_init__(self):
        check_sparsity(self.sparsity)
        check_int("prune_num", self.prune_num, 1)
        check_choice("reinit", self.reinit, REINITS)
        if self.update_stats and not self.saliency_train_mode:
            raise ValueError("update_stats needs saliency_train_mode=True.")


@dataclasses.dataclass(frozen=True)
class ProjectionSettings:
    """The forget memory and the projection of the repair step.

    Attributes:
      kind: the projection (:data:`PROJECTIONS`); ``"none"`` turns it off.
      margin: GEM margin.
      eps: ridge of the QP.
      every: project only every n-th joint step (10 in two release settings).
      memory_num: forget batches in the memory (t).
      cumulative: memory row i is the sum of the first i batch gradients, as the
        release computes it for ``memory_num > 1`` (it never zeroes gradients between
        memory batches); off: one clean gradient per row.
    """

    kind: str = "gem"
    margin: float = 0.5
    eps: float = 1e-3
    every: int = 1
    memory_num: int = 1
    cumulative: bool = False

    def __post_init__(self):
        check_choice("projection", self.kind, PROJECTIONS)
        check_real("margin", self.margin)
        check_real("eps", self.eps)
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps!r}.")
        check_int("project_every", self.every, 1)
        check_int("memory_num", self.memory_num, 1)


@dataclasses.dataclass(frozen=True)
class RepairSettings:
    """Phase 2: fine-tuning on :math:`L_r - \\lambda L_f` with momentum SGD.

    Attributes:
      lr: constant learning rate.
      epochs: repair epochs.
      lam: weight :math:`\\lambda` of the forget loss.
      momentum: SGD momentum.
      weight_decay: coupled weight decay.
    """

    lr: float = 5e-3
    epochs: int = 10
    lam: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self):
        check_real("lr", self.lr, positive=True)
        check_int("epochs", self.epochs, 0)
        for name in ("lam", "momentum", "weight_decay"):
            check_real(name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How the batches are drawn and where the steps run.

    Attributes:
      batch_size: batch size for array data.
      progress: show progress bars.
      mesh: run data-parallel on this :class:`jax.sharding.Mesh` (see
        :func:`scissorhands_jax.parallel.data_mesh`); None: the default device.
      shard_params: with ``mesh``, split large parameter leaves over the data axis.
      precision: ``"float32"`` or ``"bfloat16"`` (bfloat16 compute with float32
        parameters and optimiser state; see :mod:`scissorhands_jax.precision`).
    """

    batch_size: int = 256
    progress: bool = True
    mesh: Any = None
    shard_params: bool = False
    precision: str = "float32"

    def __post_init__(self):
        check_int("batch_size", self.batch_size, 1)
        check_precision(self.precision)


GROUPS: dict[str, type] = {
    "trim": TrimSettings,
    "projection": ProjectionSettings,
    "repair": RepairSettings,
    "training": TrainingSettings,
}

FLAT_NAMES: dict[str, tuple[str, str]] = {
    **{f.name: ("trim", f.name) for f in dataclasses.fields(TrimSettings)},
    **{f.name: ("repair", f.name) for f in dataclasses.fields(RepairSettings)},
    **{f.name: ("training", f.name) for f in dataclasses.fields(TrainingSettings)},
    "projection": ("projection", "kind"),
    "margin": ("projection", "margin"),
    "eps": ("projection", "eps"),
    "project_every": ("projection", "every"),
    "memory_num": ("projection", "memory_num"),
    "cumulative_memory": ("projection", "cumulative"),
}
"""The flat names of the settings (config sections, ``--set`` keys) and where each lives."""


def flat_defaults() -> dict[str, Any]:
    """Every flat setting with its default, read from the dataclasses."""
    return {name: getattr(GROUPS[group](), field) for name, (group, field) in FLAT_NAMES.items()}


def from_flat(**flat: Any) -> dict[str, Any]:
    """The four settings objects from flat names (``sparsity=0.9, projection="none"``).

    Returns:
      ``{"trim": TrimSettings, "projection": ..., "repair": ..., "training": ...}``,
      the keyword arguments of :func:`scissorhands_jax.scissorhands`.

    Raises:
      ValueError: an unknown name (listing the known ones) or a bad value.
    """
    unknown = sorted(set(flat) - set(FLAT_NAMES))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; the settings are {sorted(FLAT_NAMES)}.")
    fields: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for name, value in flat.items():
        group, field = FLAT_NAMES[name]
        fields[group][field] = value
    return {group: GROUPS[group](**values) for group, values in fields.items()}


def to_flat(**settings: Any) -> dict[str, Any]:
    """The inverse of :func:`from_flat` (missing groups take their defaults)."""
    objs = {group: settings.get(group) or cls() for group, cls in GROUPS.items()}
    return {name: getattr(objs[group], field) for name, (group, field) in FLAT_NAMES.items()}
