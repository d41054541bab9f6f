"""The settings of the method, as small frozen dataclasses: the only copy of each default.

:func:`scissorhands_jax.scissorhands` takes one of each; the defaults are the release's
CIFAR-10 random-10 % setting. Every value is checked, for its type and its range, when
the dataclass is built (the one place each setting is checked), and stored as a Python
number, so a bad setting fails with its name and value before any work is done; 0-d
NumPy or JAX arrays are accepted for numbers.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scissorhands_jax._precision import check_precision

REINITS = ("model", "torch", "trunc_normal")
"""Where fresh values come from: the model's own initialisers, PyTorch's default
kaiming-uniform (release parity), or ``trunc_normal_(std=0.02)`` (the release's
diffusion class recipe)."""

PROJECTIONS = ("gem", "orthogonal", "orthogonal_on_conflict", "none")
"""The projections of the repair step (see :mod:`scissorhands_jax._projection`)."""

CALIBRATIONS = ("none", "temperature")
"""What happens to the outputs after the repair: nothing (the method as published), or
one temperature fitted so that the mean logit-scaled confidence of the true class on
held-out data is the original's (see :mod:`scissorhands_jax._calibration`)."""

TIES = ("exact", "release")
r"""How the trim breaks ties at the threshold: select exactly the top
:math:`N - \lfloor\text{sparsity}\cdot N\rfloor` entries, equal scores ranked by
position (``"exact"``), or the release's rule :math:`[s > \tau]` with its midpoint
fallback, which can select more or fewer (``"release"``; see
:func:`scissorhands_jax._saliency.top_k_mask`)."""


def _scalar(value: Any) -> Any:
    """``value`` as a Python number when it is a real number: a Python or NumPy scalar,
    or a 0-d NumPy or JAX array of an integer or floating dtype; None otherwise (bools,
    strings, arrays with axes, ...)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Real):
        return value.item() if isinstance(value, np.generic) else value
    dtype = getattr(value, "dtype", None)
    if getattr(value, "shape", None) != () or dtype is None:
        return None
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        return None
    try:
        return value.item()
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        return None  # a traced value: settings are Python numbers


def _hint(hint: str) -> str:
    return f"; {hint}" if hint else "."


def check_int(name: str, value: Any, low: int, hint: str = "") -> int:
    """``value`` as a Python int; raises ValueError unless it is an integer >= ``low``
    (a Python or NumPy integer, or a 0-d integer array)."""
    x = _scalar(value)
    if not isinstance(x, int) or x < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}{_hint(hint)}")
    return x


def check_momentum(value: Any) -> float:
    """``value`` as a Python float; raises ValueError unless it is in [0, 1) (at 1 or
    above the momentum buffer grows without bound and SGD diverges)."""
    return check_real(
        "momentum", value, low=0.0, below=1.0, hint="SGD's momentum, in [0, 1) (the release's 0.9)"
    )


def check_real(
    name: str,
    value: Any,
    *,
    positive: bool = False,
    low: float | None = None,
    below: float | None = None,
    hint: str = "",
) -> float:
    """``value`` as a Python float; raises ValueError unless it is a finite real number
    (a Python or NumPy number, or a 0-d array), > 0 with ``positive``, >= ``low`` and
    < ``below`` when given. The message names the setting, the value and ``hint``."""
    x = _scalar(value)
    if x is None or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {value!r}{_hint(hint)}")
    x = float(x)
    if positive and x <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}{_hint(hint)}")
    if low is not None and x < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}{_hint(hint)}")
    if below is not None and x >= below:
        raise ValueError(f"{name} must be < {below}, got {value!r}{_hint(hint)}")
    return x


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a Python bool; raises ValueError unless it is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raises ValueError unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def check_sparsity(sparsity: Any) -> float:
    """``sparsity`` as a Python float; raises ValueError unless it is a real number (a
    Python or NumPy number, or a 0-d array) in the open interval (0, 1)."""
    x = _scalar(sparsity)
    if x is None or not 0.0 < float(x) < 1.0:
        raise ValueError(
            f"sparsity must be a number in the open interval (0, 1), got {sparsity!r}; "
            "it is the fraction of parameters kept (0.97 re-initialises the top 3 %)."
        )
    return float(x)


def _set(obj: Any, **values: Any) -> None:
    """Stores checked, normalised values on a frozen dataclass (in ``__post_init__``)."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)


MARGIN_HINT = "GEM's lower bound on the dual variables (the release's 0.5; 0 for plain GEM)"
EPS_HINT = "the ridge on M M^T (the release's 1e-3; 0 for none)"
LR_HINT = "the repair's constant learning rate (the release uses 2e-4 to 5e-3)"
PROJECT_EPOCHS_HINT = (
    "the number of first repair epochs that project; None projects in every epoch, "
    "projection='none' in none"
)
LAM_HINT = "the weight of the forget loss in L_r - lam * L_f (0 turns the forget term off)"


@dataclasses.dataclass(frozen=True)
class TrimSettings:
    r"""Phase 1: saliency, global top-k, masked re-initialisation.

    Attributes:
      sparsity: fraction of parameters kept; 0.97 re-initialises the top 3 %.
      prune_num: forget batches in the saliency.
      reinit: where fresh values come from (:data:`REINITS`).
      saliency_train_mode: compute the saliency with the model in training mode.
      update_stats: with ``saliency_train_mode``, keep the running statistics that the
        saliency's forward passes move (the release's behaviour on BatchNorm networks);
        off: the statistics are those of the trained model.
      ties: how ties at the threshold are broken (:data:`TIES`): ``"exact"`` selects
        exactly the top :math:`N - \lfloor\text{sparsity}\cdot N\rfloor` entries,
        equal scores ranked by position (the later leaf, then the later entry, ranks
        higher); ``"release"`` is the release's rule, which can select more or fewer
        (all of a tied tree, say) and warns when it does.
    """

    sparsity: float = 0.97
    prune_num: int = 1
    reinit: str = "model"
    saliency_train_mode: bool = False
    update_stats: bool = False
    ties: str = "exact"

    def __post_init__(self):
        _set(
            self,
            sparsity=check_sparsity(self.sparsity),
            prune_num=check_int("prune_num", self.prune_num, 1, "forget batches in the saliency"),
            saliency_train_mode=check_bool("saliency_train_mode", self.saliency_train_mode),
            update_stats=check_bool("update_stats", self.update_stats),
        )
        check_choice("reinit", self.reinit, REINITS)
        check_choice("ties", self.ties, TIES)
        if self.update_stats and not self.saliency_train_mode:
            raise ValueError("update_stats needs saliency_train_mode=True.")


@dataclasses.dataclass(frozen=True)
class ProjectionSettings:
    """The forget memory and the projection of the repair step.

    Attributes:
      projection: the projection (:data:`PROJECTIONS`); ``"none"`` turns it off.
      margin: GEM margin, finite and >= 0.
      eps: ridge of the QP, finite and >= 0 (0: dependent or zero memories are handled
        by a pseudo-inverse, see :func:`~scissorhands_jax._projection.gem_projection`).
      project_every: project only every n-th joint step (10 in two release settings).
      project_epochs: project only in the first ``project_epochs`` repair epochs, then
        repair without memory or projection; None (the method as published): in every epoch.
      memory_num: forget batches in the memory (t).
      cumulative_memory: memory row i is the sum of the first i batch gradients, as the
        release computes it for ``memory_num > 1`` (it never zeroes gradients between
        memory batches); off: one clean gradient per row.
    """

    projection: str = "gem"
    margin: float = 0.5
    eps: float = 1e-3
    project_every: int = 1
    project_epochs: int | None = None
    memory_num: int = 1
    cumulative_memory: bool = False

    def __post_init__(self):
        check_choice("projection", self.projection, PROJECTIONS)
        _set(
            self,
            margin=check_real("margin", self.margin, low=0.0, hint=MARGIN_HINT),
            eps=check_real("eps", self.eps, low=0.0, hint=EPS_HINT),
            project_every=check_int("project_every", self.project_every, 1,
                                    "1 projects every joint step"),
            project_epochs=None
            if self.project_epochs is None
            else check_int("project_epochs", self.project_epochs, 1, PROJECT_EPOCHS_HINT),
            memory_num=check_int("memory_num", self.memory_num, 1, "forget batches in the memory"),
            cumulative_memory=check_bool("cumulative_memory", self.cumulative_memory),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RepairSettings:
    r"""Phase 2: fine-tuning on :math:`L_r - \lambda L_f` with momentum SGD.

    Attributes:
      lr: constant learning rate, finite and > 0.
      epochs: repair epochs (0: trim only).
      lam: weight :math:`\lambda` >= 0 of the forget loss.
      momentum: SGD momentum, in [0, 1).
      weight_decay: coupled weight decay, >= 0.
    """

    lr: float = 5e-3
    epochs: int = 10
    lam: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self):
        _set(
            self,
            lr=check_real("lr", self.lr, positive=True, hint=LR_HINT),
            epochs=check_int("epochs", self.epochs, 0, "repair epochs (0: trim only)"),
            lam=check_real("lam", self.lam, low=0.0, hint=LAM_HINT),
            momentum=check_real("momentum", self.momentum, low=0.0, below=1.0,
                                hint="SGD's momentum, in [0, 1) (the release's 0.9)"),
            weight_decay=check_real("weight_decay", self.weight_decay, low=0.0,
                                    hint="coupled weight decay (the release's 5e-4)"),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class AdamRepairSettings:
    r"""Phase 2 of a diffusion model's Scissorhands: Adam steps on :math:`L_r - \lambda
    L_f` (or :math:`L_r + \lambda L_{anchor}`), one retain and one forget batch each.

    The defaults map the release's Stable Diffusion class recipe onto a DDPM.

    Attributes:
      lr: Adam's constant learning rate, finite and > 0.
      steps: repair steps (0: trim only).
      lam: weight :math:`\lambda` >= 0 of the forget term.
      batch_size: batch size for array data.
      grad_clip: clip the gradient's global norm at this value (None: off, as the
        release).
      memory_every: steps between refreshes of the forget memory (with a projection).
      log_every: steps per log entry.
    """

    lr: float = 2e-5
    steps: int = 500
    lam: float = 0.1
    batch_size: int = 128
    grad_clip: float | None = None
    memory_every: int = 50
    log_every: int = 50

    def __post_init__(self):
        _set(
            self,
            lr=check_real("lr", self.lr, positive=True, hint="Adam's learning rate"),
            steps=check_int("steps", self.steps, 0, "repair steps (0: trim only)"),
            lam=check_real("lam", self.lam, low=0.0, hint=LAM_HINT),
            batch_size=check_int("batch_size", self.batch_size, 1, "examples per batch"),
            grad_clip=None
            if self.grad_clip is None
            else check_real("grad_clip", self.grad_clip, positive=True,
                            hint="the global-norm bound, or None for no clipping"),
            memory_every=check_int("memory_every", self.memory_every, 1,
                                   "steps between forget-memory refreshes"),
            log_every=check_int("log_every", self.log_every, 1, "steps per log entry"),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """How the batches are drawn, shown and computed.

    Attributes:
      batch_size: batch size for array data.
      progress: show progress bars.
      precision: ``"float32"`` or ``"bfloat16"`` (bfloat16 compute with float32
        parameters and optimiser state; see :mod:`scissorhands_jax._precision`).
    """

    batch_size: int = 256
    progress: bool = False
    precision: str = "float32"

    def __post_init__(self):
        _set(
            self,
            batch_size=check_int("batch_size", self.batch_size, 1, "examples per batch"),
            progress=check_bool("progress", self.progress),
        )
        check_precision(self.precision)


@dataclasses.dataclass(frozen=True)
class CalibrationSettings:
    """What happens to the outputs after the repair (opt-in; off by default).

    Attributes:
      calibration: :data:`CALIBRATIONS`; ``"temperature"`` divides the logits by one fitted
        temperature (the classifier head's kernel and bias are scaled), so that the mean
        logit-scaled confidence of the true class on held-out data is the original
        model's. The held-out data (inputs and labels) is an
        input of :func:`scissorhands_jax.scissorhands` (``calibration_data``).
    """

    calibration: str = "none"

    def __post_init__(self):
        check_choice("calibration", self.calibration, CALIBRATIONS)


GROUPS: dict[str, type] = {
    "trim": TrimSettings,
    "projection": ProjectionSettings,
    "repair": RepairSettings,
    "training": TrainingSettings,
    "calibration": CalibrationSettings,
}

GROUP_OF: dict[str, str] = {
    field.name: group for group, cls in GROUPS.items() for field in dataclasses.fields(cls)
}
"""Each setting's name (a field of one settings class, a key of a config's ``unlearn``
section and of ``--set``) and the group that holds it: every name is unique."""


def flat_defaults() -> dict[str, Any]:
    """Every flat setting with its default, read from the dataclasses."""
    return {name: getattr(GROUPS[group](), name) for name, group in GROUP_OF.items()}


def from_flat(**flat: Any) -> dict[str, Any]:
    """The settings objects from their names (``sparsity=0.9, projection="none"``).

    Returns:
      ``{"trim": TrimSettings, "projection": ..., "repair": ..., "training": ...,
      "calibration": ...}``,
      the keyword arguments of :func:`scissorhands_jax.scissorhands`.

    Raises:
      ValueError: an unknown name (listing the known ones) or a bad value.
    """
    unknown = sorted(set(flat) - set(GROUP_OF))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}; the settings are {sorted(GROUP_OF)}.")
    fields: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for name, value in flat.items():
        fields[GROUP_OF[name]][name] = value
    return {group: GROUPS[group](**values) for group, values in fields.items()}


def to_flat(**settings: Any) -> dict[str, Any]:
    """The inverse of :func:`from_flat` (missing groups take their defaults)."""
    objs = {group: settings.get(group) or cls() for group, cls in GROUPS.items()}
    return {name: getattr(objs[group], name) for name, group in GROUP_OF.items()}
