"""One scenario of a comparison: a config's models and the methods run from them.

A :class:`Scenario` is what :func:`scissorhands_jax.experiment.compare.run_compare` runs
per config: it loads the config, checks every requested method's hyperparameters before
any work, trains (or resumes) the original and Retrain of a seed with the code of
``scissorhands train``, runs a method from the original and evaluates a model with the
full suite. The comparison's rows, their resumption and the report stay in
:mod:`scissorhands_jax.experiment.compare`.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import jax

from scissorhands_jax._method import check_settings, scissorhands
from scissorhands_jax._preemption import Preempted, PreemptionGuard, preemption_requested
from scissorhands_jax._settings import flat_defaults
from scissorhands_jax.baselines import HYPERPARAMETERS, METHODS
from scissorhands_jax.experiment.report import ORIGINAL, REFERENCE
from scissorhands_jax.experiment.rundir import check_setting, run_directory
from scissorhands_jax.metrics import evaluation_suite, rte
from scissorhands_jax.parallel import on_mesh

CONFIG_SECTIONS_OF_MODELS = ("data", "model", "train", "retrain", "eval")
"""Config sections the trained models depend on: a resumed comparison must not change them."""

_RESUME = "pass a new --out, or the same config and --set values, to resume"

_RUNTIME_SETTINGS = ("progress",)


def method_defaults(name: str) -> dict[str, Any]:
    """The defaults of method ``name``'s hyperparameters: the fields of its dataclass in
    :data:`scissorhands_jax.baselines.HYPERPARAMETERS` (the release settings of the
    baselines), or Scissorhands' flat settings; what a comparison runs where neither the
    config's ``methods`` section nor ``--set`` says otherwise."""
    if name == "scissorhands":
        flat = {k: v for k, v in flat_defaults().items() if k not in _RUNTIME_SETTINGS}
        return {"eligible": None, **flat}
    return dataclasses.asdict(HYPERPARAMETERS[name]())


def method_parameters(name: str) -> set[str]:
    """The names of method ``name``'s hyperparameters."""
    return set(method_defaults(name))


def _check_methods(methods, overrides) -> None:
    unknown = sorted(set(methods) - set(METHODS)) + sorted(set(overrides) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}.")
    if REFERENCE in overrides:
        key = next(iter(overrides[REFERENCE]), "epochs")
        raise ValueError(
            "Retrain uses the training schedule of the config's retrain section; change it "
            f"with --set retrain.{key}=... , not with methods.retrain.*."
        )
    for name, extra in overrides.items():
        if name in HYPERPARAMETERS:  # unknown names and bad values, before any work
            try:
                HYPERPARAMETERS[name].of(name, extra)
            except ValueError as err:
                given = " ".join(f"methods.{name}.{k}={v!r}" for k, v in extra.items())
                raise ValueError(f"--set {given}: {err}") from None
            continue
        bad = sorted(set(extra) - method_parameters(name))
        if bad:
            raise ValueError(
                f"{name} has no hyperparameter(s) {bad}; it takes "
                f"{sorted(method_parameters(name))}."
            )


def _check_scissorhands(settings: dict[str, Any], given: dict[str, Any]) -> None:
    """Scissorhands' settings as its own checks see them, before any work (its other
    methods' checks run in :func:`_check_methods`)."""

    try:
        check_settings(**settings)
    except ValueError as err:
        where = " ".join(f"scissorhands.{k}={v!r}" for k, v in given.items())
        raise ValueError(f"--set {where}: {err}" if where else str(err)) from None


class Scenario:
    """An experiment config: its data, model, request and schedules, trained and evaluated
    by the code of ``scissorhands train`` / ``evaluate``; one scenario of a comparison,
    named after the config's file (``_smoke`` added with ``smoke``).

    Seed s sets ``data.forget.seed``, ``train.seed``, ``retrain.seed`` and
    ``unlearn.seed`` to s (so seed 0 of a shipped config is exactly the run of
    ``scissorhands train`` + ``unlearn`` on it). The original and Retrain of seed s live in
    the run directory ``runs/seed<s>`` of the config's folder (the layout of
    ``scissorhands train --out``), checkpointed every ``checkpoint_every`` steps and
    resumed from there. Scissorhands runs with the config's ``unlearn`` settings on batch
    sources (the config's augmentation), exactly as ``scissorhands unlearn``; the other
    methods take the retain and forget sets as normalised, unaugmented arrays (they relabel
    and take per-example gradients) with the hyperparameters of the config's ``methods``
    section over their release defaults, key ``2000 + s``.
    """

    def __init__(self, path, *, smoke, config_overrides, data_dir, methods, overrides, mesh):
        from scissorhands_jax.experiment.config import load_config, methods_of

        self.mesh = mesh  # where the models train and run

        config_overrides = list(config_overrides)
        if data_dir:
            config_overrides.append(f"data.data_dir={str(data_dir)!r}")
        self.cfg = load_config(path, smoke=smoke, overrides=config_overrides)
        _check_methods(methods, overrides)
        self.scenario = Path(path).stem + ("_smoke" if smoke else "")
        configured = methods_of(self.cfg)
        self.hyperparameters = {
            REFERENCE: self.cfg["retrain"],
            ORIGINAL: self.cfg["train"],
        }
        for name in methods:
            if name != REFERENCE:
                self.hyperparameters[name] = {**configured[name], **overrides.get(name, {})}
        if "scissorhands" in self.hyperparameters:
            _check_scissorhands(
                self.hyperparameters["scissorhands"], overrides.get("scissorhands", {})
            )
        self._arrays: tuple = (None, None, None)  # (split, retain, forget) of the last request

    def open(self, out: Path) -> None:
        from scissorhands_jax.experiment import pipeline as pipe

        self.out = out
        wanted = {k: self.cfg[k] for k in CONFIG_SECTIONS_OF_MODELS}
        wanted["config"] = self.cfg["config_path"]
        record = {"path": out / "setting.json", "what": "a comparison", "fix": _RESUME}
        check_setting(**record, wanted=wanted, write=False)
        # the data and the model first: a setting they refuse is never recorded
        self.dataset = pipe.build_dataset(self.cfg, progress=False)
        self.model = pipe.build_model(self.cfg, self.dataset)
        out.mkdir(exist_ok=True)  # a scenario's folder, in a comparison of several configs
        check_setting(**record, wanted=wanted)

    def seed_config(self, seed: int) -> dict:
        cfg = copy.deepcopy(self.cfg)
        cfg["data"]["forget"]["seed"] = int(seed)
        for section in ("train", "retrain", "unlearn"):
            cfg[section]["seed"] = int(seed)
        return cfg

    def split(self, scenario, seed):
        from scissorhands_jax.experiment import pipeline as pipe

        return pipe.build_split(self.seed_config(seed), progress=False, dataset=self.dataset)

    def _trained(self, role, seed, split, progress):
        from scissorhands_jax.experiment import pipeline as pipe

        cfg = self.seed_config(seed)
        with run_directory(self.out / "runs" / f"seed{seed}") as run:  # as `train --out`
            pipe.record_split(run, split, cfg)
            # SIGTERM: save at the next step, as `train` does, then stop the comparison
            with pipe.checkpoints(run, role, cfg, split) as ck, PreemptionGuard():
                state = pipe.train_role(run, role, cfg, split, self.model, ck, progress=progress,
                                        mesh=self.mesh)  # fmt: skip
                if preemption_requested():
                    raise Preempted(f"{role} saved at step {state.step}")
        seconds = pipe.read_json(run / role / "log.json", {}).get("train_time_s", float("nan"))
        return state.params, state.model_state, seconds

    def original(self, scenario, seed, split, progress=False):
        return self._trained(ORIGINAL, seed, split, progress)

    def retrain(self, scenario, seed, split, progress=False):
        return self._trained(REFERENCE, seed, split, progress)

    def unlearn(self, name, seed, split, params, state, *, progress):
        from scissorhands_jax.experiment import pipeline as pipe

        hps = self.hyperparameters[name]
        key = jax.random.key(2000 + seed)
        if self.mesh is not None:  # the methods run where their parameters live
            params, state = on_mesh((params, state), self.mesh)
        if name == "scissorhands":
            augment = self.cfg["unlearn"]["augment"]
            bs = hps["batch_size"]
            result, seconds = rte(
                scissorhands,
                self.model,
                params,
                state,
                retain=split.source("retain", bs, augment=augment),
                forget=split.source("forget", bs, augment=augment),
                key=jax.random.key(seed),  # as ``scissorhands unlearn`` (unlearn.seed)
                eligible=hps.get("eligible"),
                **check_settings(progress=progress, **hps),
            )
        else:
            if self._arrays[0] is not split:  # once per request, not once per method
                arrays = (pipe.split_arrays(split, "retain"), pipe.split_arrays(split, "forget"))
                self._arrays = (split, *arrays)
            _, retain, forget = self._arrays
            result, seconds = rte(
                METHODS[name],
                self.model,
                params,
                state,
                retain=retain,
                forget=forget,
                key=key,
                **hps,
            )
        return result.params, result.model_state, seconds

    def evaluate(self, split, params, state, *, progress):
        from scissorhands_jax.experiment import pipeline as pipe

        preds = pipe.predictions(
            self.model,
            params,
            state,
            split,
            batch_size=self.cfg["eval"]["batch_size"],
            progress=progress,
            mesh=self.mesh,
        )
        return evaluation_suite(**preds)
