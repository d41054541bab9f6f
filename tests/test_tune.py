"""Tuning on the audit (scissorhands_jax.experiment.tune): budget, space, objective, resume."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest

from scissorhands_jax import cli
from scissorhands_jax.baselines import METHODS
from scissorhands_jax.experiment import _audit_population, audit, protocol, tune

TINY = dataclasses.replace(
    audit.load_protocol("digits_small"), name="tiny", pool_size=120, candidates=40, epochs=2
)


def protocol_file(folder, protocol, name):
    """``folder/audit_<name>.py``: a protocol config holding ``protocol``'s settings."""
    settings = {k: v for k, v in protocol.setting().items() if k != "name"}
    path = folder / f"audit_{name}.py"
    path.write_text(
        f"CONFIG = {{'protocol': {settings!r}, 'methods': {dict(protocol.methods)!r}}}\n"
    )
    return path


SMALL_SPACE = {
    "ft": {"lr": [0.01, 0.1, 0.3], "steps": [1, 2]},
    "ga": {"lr": [1e-3, 1e-2], "steps": [1, 3]},
}


def test_every_method_but_retrain_has_a_space_and_the_same_budget():
    assert set(tune.SEARCH_SPACE) == (set(METHODS) | set(protocol.VARIANTS)) - {"retrain"}
    plans = {m: tune.sample_trials(m, s, 8, seed=100) for m, s in tune.SEARCH_SPACE.items()}
    assert {len(p) for p in plans.values()} == {8}
    sparsities = tune.SEARCH_SPACE["scissorhands"]["sparsity"]
    assert max(sparsities) >= 0.9995 and 0.99 in sparsities
    assert {"lr", "steps", "lam", "projection", "project_every"} <= set(
        tune.SEARCH_SPACE["scissorhands"]
    )
    # the published method searches only the release's own knobs; the softer schedule is
    # a variant of its own, and the calibrated variants search the same grids
    assert "project_epochs" not in tune.SEARCH_SPACE["scissorhands"]
    assert "project_epochs" in tune.SEARCH_SPACE["scissorhands_soft"]
    assert tune.SEARCH_SPACE["scissorhands_cal"] == tune.SEARCH_SPACE["scissorhands"]
    assert tune.SEARCH_SPACE["scissorhands_soft_cal"] == tune.SEARCH_SPACE["scissorhands_soft"]


@pytest.mark.parametrize("method", sorted(tune.SEARCH_SPACE))
def test_trials_are_distinct_and_drawn_from_the_declared_space(method):
    space = tune.SEARCH_SPACE[method]
    trials = tune.sample_trials(method, space, 8, seed=100)
    keys = [json.dumps(t, sort_keys=True) for t in trials]
    assert len(set(keys)) == 8
    grid = [dict(zip(space, v, strict=True)) for v in itertools.product(*space.values())]
    assert all(t in grid for t in trials)
    # seeded: the same draw again, a larger budget extends it, another seed differs
    assert tune.sample_trials(method, space, 8, seed=100) == trials
    assert tune.sample_trials(method, space, 10, seed=100)[:8] == trials
    assert tune.sample_trials(method, space, 8, seed=7) != trials


def test_the_whole_grid_is_every_setting_once_and_a_budget_beyond_it_is_refused():
    space = {"a": [1, 2, 3], "b": ["x", "y"]}
    every = tune.sample_trials("ft", space, 6, seed=0)
    assert sorted((t["a"], t["b"]) for t in every) == sorted(itertools.product([1, 2, 3], "xy"))
    with pytest.raises(ValueError, match="exceeds the 6 settings"):
        tune.sample_trials("ft", space, 7, seed=0)
    with pytest.raises(ValueError, match="--trials must be an integer >= 1"):
        tune.sample_trials("ft", space, 0, seed=0)


def test_steps_become_epochs_at_the_size_of_what_an_epoch_passes_over():
    # 160 retain and 40 forget examples in batches of 64: 3 retain steps, 1 forget step,
    # 4 steps over both
    assert tune.epochs_for("ft", 30, 64, 160, 40) == 10
    assert tune.epochs_for("ga", 5, 64, 160, 40) == 5
    assert tune.epochs_for("rl", 40, 64, 160, 40) == 10
    assert tune.epochs_for("scissorhands", 60, 64, 160, 40) == 20
    # the same steps at twice the retain set (5 steps an epoch): 6 epochs, 30 steps again
    assert tune.epochs_for("ft", 30, 64, 320, 40) == 6
    assert tune.epochs_for("ft", 1, 64, 320, 40) == 1  # at least one epoch
    with pytest.raises(ValueError, match="iu has no epochs"):
        tune.epochs_for("iu", 10, 64, 160, 40)


def test_concrete_hyperparameters_keep_the_defaults_and_turn_steps_into_epochs():
    data = audit.make_population(TINY, 4, seed=0)  # 40 retain, 20 forget per model
    hps = tune.concrete_hyperparameters("ft", {"lr": 0.3, "steps": 7}, TINY, data)
    assert hps == {**audit.method_hyperparameters("ft", TINY), "lr": 0.3, "epochs": 7}
    hps = tune.concrete_hyperparameters("iu", {"alpha": 5.0}, TINY, data)
    assert hps["alpha"] == 5.0 and "steps" not in hps


def test_iu_trials_share_the_fisher_solve_and_give_the_same_models(monkeypatch):
    import jax

    from scissorhands_jax import baselines
    from scissorhands_jax.baselines import _influence as iu

    model = audit.build_model(TINY)
    params, state = model.init(jax.random.key(0))
    data = audit.make_population(TINY, 4, seed=0)
    retain = {n: v[data.retains[0]] for n, v in data.pool.items()}
    forget = {n: v[data.forgets[0]] for n, v in data.pool.items()}
    solves = []
    real = iu.influence_direction
    counted = lambda *a: solves.append(1) or real(*a)  # noqa: E731
    monkeypatch.setattr(iu, "influence_direction", counted)  # the reference's solves
    monkeypatch.setattr(baselines, "influence_direction", counted)  # the tuner's
    reused = tune.ReusedInfluence()
    hps = {"fisher_examples": 16, "chunk_size": 8, "batch_size": 64}
    for alpha, damping, k in ((1.0, 1.0, 0), (100.0, 1.0, 0), (100.0, 10.0, 0), (1.0, 1.0, 1)):
        key = jax.random.key(k)  # one model per key
        kw = {"retain": retain, "forget": forget, "key": key, "alpha": alpha, **hps}
        got = reused(model, params, state, damping=damping, **kw)
        want = iu.influence_unlearning(model, params, state, damping=damping, **kw)
        for g, w in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params), strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # the reference ran its own 4 solves; the reused one solved once per model and damping
    assert len(solves) == 4 + 3


def _row(index, acc, ta, error=None):
    row = {"index": index, "ulira_accuracy": acc, "TA": ta}
    row["objective"] = tune.objective(row)
    row["feasible"] = tune.feasible(row, retrain_ta=90.0)
    if error:
        row.update(error=error, objective=float("inf"), feasible=False)
    return row


def test_objective_and_feasibility_on_hand_made_rows():
    assert tune.objective({"ulira_accuracy": 0.62}) == pytest.approx(0.12)
    assert tune.objective({"ulira_accuracy": 0.38}) == pytest.approx(0.12)
    assert tune.feasible({"TA": 88.0}, retrain_ta=90.0)  # exactly 2 points below
    assert not tune.feasible({"TA": 87.9}, retrain_ta=90.0)
    assert tune.feasible({"TA": 87.9}, retrain_ta=90.0, ta_slack=5.0)
    rows = [_row(0, 0.70, 91.0), _row(1, 0.51, 80.0), _row(2, 0.60, 89.0), _row(3, 0.5, 95, "nan")]
    # the infeasible 0.51 (TA 10 points down) and the failed trial lose to 0.60
    assert tune.choose(rows)["index"] == 2
    # none feasible: the least violating (highest TA) is chosen
    assert tune.choose([_row(0, 0.5, 70.0), _row(1, 0.9, 85.0)])["index"] == 1
    assert tune.choose([_row(0, 0.5, 95, "diverged")]) is None


def _fake_outputs(data, seed):
    rng = np.random.default_rng(seed)
    k, n = data.members.shape
    pool = rng.normal(0, 1, (k, n, 10))
    pool[:, np.arange(n), data.pool["label"]] += 3.0
    test = rng.normal(0, 1, (k, len(data.test["label"]), 10))
    test[:, np.arange(test.shape[1]), data.test["label"]] += 3.0
    return {"pool": pool, "test": test}


@pytest.fixture
def fake_runs(monkeypatch):
    """Replaces training and unlearning by random logits; records every method run."""
    calls = {"train": [], "unlearn": [], "seeds": []}

    def train(model, protocol, data, store, roles, *, key, backend, progress):
        calls["train"].append(sorted(roles))
        for i, role in enumerate(sorted(roles)):
            if store.get(role) is None:
                store.put(role, _fake_outputs(data, i), [0.0] * len(data.members))
        return {audit.ORIGINAL: (None, None)}

    def unlearn(name, hps, model, originals, data, *, seed, progress, unlearn=None, mesh=None):
        calls["unlearn"].append((name, dict(hps)))
        return _fake_outputs(data, len(calls["unlearn"]) + 10), [0.0] * len(data.members)

    real = audit.make_population

    def population(protocol, num_models, seed):
        calls["seeds"].append(seed)
        return real(protocol, num_models, seed)

    monkeypatch.setattr(_audit_population, "train_roles", train)
    monkeypatch.setattr(_audit_population, "unlearn_all", unlearn)
    monkeypatch.setattr(audit, "make_population", population)
    return calls


def _tune(out, trials, **kw):
    kw = {"protocols": [TINY], "shadows": 4, "space": SMALL_SPACE, "num_bootstrap": 20, **kw}
    return tune.run_tune(out=out, trials=trials, **kw)


def test_resume_skips_finished_trials_and_every_trial_is_written(tmp_path, fake_runs):
    out = tmp_path / "tune"
    settings = _tune(out, 2)
    assert fake_runs["seeds"] == [tune.TUNING_SEED]
    assert sorted(m for m, _ in fake_runs["unlearn"]) == ["ft", "ft", "ga", "ga"]
    lines = (out / "tiny" / "trials.jsonl").read_text().splitlines()
    first = [json.loads(line) for line in lines]
    assert len(first) == 4
    for row in first:
        assert {"method", "params", "ulira_accuracy", "ulira_auc", "UA", "RA", "TA", "objective",
                "feasible", "seconds"} <= set(row)  # fmt: skip
        assert row["objective"] == pytest.approx(abs(row["ulira_accuracy"] - 0.5))
    # a larger budget runs only the new trials; the written ones stay as they were
    fake_runs["unlearn"].clear()
    settings = _tune(out, 3)
    assert sorted(m for m, _ in fake_runs["unlearn"]) == ["ft", "ga"]
    rows = [json.loads(x) for x in (out / "tiny" / "trials.jsonl").read_text().splitlines()]
    assert rows[:4] == first and len(rows) == 6
    fake_runs["unlearn"].clear()
    _tune(out, 3)
    assert fake_runs["unlearn"] == []
    stored = json.loads((out / "settings.json").read_text())
    assert stored == json.loads(json.dumps(settings))
    assert stored["trials_per_method"] == 3 and stored["space"] == SMALL_SPACE
    assert stored["tuning_seed"] == tune.TUNING_SEED and stored["shadows"] == 4
    for method, choice in stored["protocols"]["tiny"]["methods"].items():
        assert choice["trials"] == 3
        best = tune.choose([r for r in rows if r["method"] == method])
        assert choice["hyperparameters"] == best["params"]
    report = (out / "report.md").read_text()
    assert "3 trials per method" in report and "steps ∈ [1, 2]" in report
    with pytest.raises(ValueError, match="other setting"):
        _tune(out, 3, tuning_seed=5)


def test_methods_tuned_in_turns_share_a_settings_file_only_at_the_same_budget(tmp_path, fake_runs):
    out = tmp_path / "tune"
    _tune(out, 2, methods=["ft"])
    settings = _tune(out, 2, methods=["ga"])
    assert [m for m, _ in fake_runs["unlearn"]] == ["ft", "ft", "ga", "ga"]
    assert set(settings["protocols"]["tiny"]["methods"]) == {"ft", "ga"}
    assert set(settings["space"]) == {"ft", "ga"}
    # a larger budget for GA alone: FT's 2 trials are not 3, so FT leaves the file
    settings = _tune(out, 3, methods=["ga"])
    assert set(settings["protocols"]["tiny"]["methods"]) == {"ga"}
    assert settings["protocols"]["tiny"]["methods"]["ga"]["trials"] == 3
    assert set(settings["space"]) == {"ga"}


def test_bad_input_is_refused_before_anything_is_written(tmp_path, fake_runs):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="exceeds the 6 settings in the search space of ft"):
        _tune(out, 7)
    with pytest.raises(ValueError, match="Retrain is the reference"):
        _tune(out, 1, methods=["retrain"])
    with pytest.raises(ValueError, match="no search space for"):
        _tune(out, 1, methods=["rl"])
    with pytest.raises(ValueError, match="even number"):
        _tune(out, 1, shadows=5)
    with pytest.raises(ValueError, match="search space of ft.*no hyperparameter.*'lrr'"):
        _tune(out, 1, space={"ft": {"lrr": [0.1]}})
    with pytest.raises(ValueError, match="search space of scissorhands.*sparsity"):
        _tune(out, 1, space={"scissorhands": {"sparsity": [1.5]}})
    with pytest.raises(ValueError, match="iu has no epochs"):
        _tune(out, 1, space={"iu": {"steps": [3]}})
    assert not out.exists() and fake_runs["train"] == []


def test_the_tuning_population_differs_from_the_reported_one():
    tuned = audit.make_population(TINY, 4, seed=tune.TUNING_SEED)
    reported = audit.make_population(TINY, 4, seed=0)
    assert not np.array_equal(tuned.candidates, reported.candidates)
    assert not np.array_equal(tuned.members, reported.members)


def test_settings_round_trip_into_the_audit(tmp_path, fake_runs):
    _tune(tmp_path / "tune", 2, methods=["ft"])
    path = tmp_path / "tune" / "settings.json"
    chosen = json.loads(path.read_text())["protocols"]["tiny"]["methods"]["ft"]["hyperparameters"]
    fake_runs["unlearn"].clear()
    rows = audit.run_audit(
        out=tmp_path / "audit", protocols=[TINY], methods=["ft", "ga"], shadows=4, seed=0,
        num_bootstrap=20, plot=False, settings=path,
    )  # fmt: skip
    used = dict(fake_runs["unlearn"])
    # 40 retain examples a model: one step an epoch, so epochs = steps
    expected = {**audit.method_hyperparameters("ft", TINY), "lr": chosen["lr"]}
    expected["epochs"] = chosen["steps"]
    assert used["ft"] == expected
    assert used["ga"] == audit.method_hyperparameters("ga", TINY)  # not in the file
    by = {r["method"]: r for r in rows}
    assert by["ft"]["tuning"]["source"] == "tuned" and by["ft"]["hyperparameters"] == expected
    assert by["ft"]["tuning"]["trials_per_method"] == 2
    assert by["ft"]["tuning"]["space"] == SMALL_SPACE["ft"]
    assert by["ga"]["tuning"] == {"source": "default"}
    report = (tmp_path / "audit" / "report.md").read_text()
    assert "tuned by `scissorhands tune` (2 trials per method" in report
    assert "defaults of the digits comparison: ga" in report
    # the tuning seed is never reported with its own settings
    with pytest.raises(ValueError, match="is the tuning seed"):
        audit.run_audit(out=tmp_path / "no", protocols=[TINY], shadows=4, seed=100, settings=path)
    with pytest.raises(ValueError, match="not a tune's settings"):
        audit.run_audit(out=tmp_path / "no", protocols=[TINY], shadows=4, settings={"x": 1})
    assert not (tmp_path / "no").exists()
    # an audit directory of default hyperparameters is not resumed with tuned ones
    audit_default = tmp_path / "default"
    audit.run_audit(out=audit_default, protocols=[TINY], methods=["ft"], shadows=4, plot=False,
                    num_bootstrap=20)  # fmt: skip
    with pytest.raises(ValueError, match="other setting"):
        audit.run_audit(out=audit_default, protocols=[TINY], methods=["ft"], shadows=4,
                        plot=False, num_bootstrap=20, settings=path)  # fmt: skip


@pytest.mark.slow
def test_cli_tunes_then_audits_with_the_chosen_settings(tmp_path, monkeypatch, capsys):
    tiny = protocol_file(tmp_path, dataclasses.replace(TINY, epochs=3), "digits_small")
    monkeypatch.setitem(tune.SEARCH_SPACE, "ft", SMALL_SPACE["ft"])
    monkeypatch.setitem(tune.SEARCH_SPACE, "scissorhands", {"sparsity": [0.99], "steps": [2]})
    out = tmp_path / "tune"
    argv = ["tune", "--out", str(out), "--methods", "ft", "scissorhands", "--trials", "1",
            "--shadows", "4", "--no-progress", "--protocol", str(tiny)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "# Tuning on the membership audit" in printed and "1 trials per method" in printed
    trials = (out / "digits_small" / "trials.jsonl").read_text().splitlines()
    assert sorted(json.loads(t)["method"] for t in trials) == ["ft", "scissorhands"]
    settings = out / "settings.json"
    argv = ["audit", "--out", str(tmp_path / "audit"), "--methods", "ft", "--shadows", "4",
            "--no-plot", "--no-progress", "--settings", str(settings),
            "--protocol", str(tiny)]  # fmt: skip
    assert cli.main(argv) == 0
    rows = json.loads((tmp_path / "audit" / "audit.json").read_text())
    ft = next(r for r in rows if r["method"] == "ft")
    chosen = json.loads(settings.read_text())["protocols"]["digits_small"]["methods"]["ft"]
    assert ft["tuning"]["params"] == chosen["hyperparameters"]
    argv[argv.index("--out") + 1] = str(tmp_path / "refused")
    assert cli.main([*argv, "--seed", "100"]) == 2
    assert "is the tuning seed" in capsys.readouterr().err


@pytest.mark.parametrize("method", sorted(tune.SEARCH_SPACE))
def test_every_declared_trial_is_one_its_method_accepts(method):
    """The whole budget of every method (variants included, through the method they run)
    passes the method's own settings checks, so no trial fails for a typo in the space."""
    trials = tune.sample_trials(method, tune.SEARCH_SPACE[method], 8, seed=100)
    tune.check_trials(method, trials, TINY)
