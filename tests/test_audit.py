"""The membership audit runner (scissorhands_jax.experiment.audit): populations, rows, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from scissorhands_jax import cli, population
from scissorhands_jax.commands.audit import PROTOCOL_NAMES, VARIANT_NAMES
from scissorhands_jax.experiment import _audit_population, audit, protocol

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


def test_cli_protocol_names_match_the_library():
    assert set(PROTOCOL_NAMES) == set(protocol.protocol_names())
    assert audit.DEFAULT_PROTOCOL in protocol.protocol_names()
    assert set(VARIANT_NAMES) == set(protocol.VARIANTS)


def test_variants_run_their_method_with_their_settings_fixed_on_top():
    from scissorhands_jax.baselines import METHODS

    published = audit.method_hyperparameters("scissorhands", TINY)
    assert published.get("calibration", "none") == "none"  # the default stays the paper's
    for name, (base, fixed) in protocol.VARIANTS.items():
        assert base in METHODS and audit.base_method(name) == base
        assert name in audit.method_names()
        assert audit.method_hyperparameters(name, TINY) == {**published, **fixed}
    assert audit.method_hyperparameters("scissorhands_cal", TINY)["calibration"] == "temperature"
    assert "calibration" not in audit.method_hyperparameters("scissorhands_soft", TINY)


def test_a_variant_is_audited_through_its_method(monkeypatch):
    """``_unlearn_all`` calls the variant's method with the variant's settings (and the
    calibration set the audit passes: its test set)."""
    from scissorhands_jax import baselines

    data = audit.make_population(TINY, 4, seed=0)
    seen = {}

    def fake(model, params, state, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop")

    monkeypatch.setitem(baselines.METHODS, "scissorhands", fake)
    hps = audit.method_hyperparameters("scissorhands_cal", TINY)
    with pytest.raises(RuntimeError, match="stop"):
        _audit_population.unlearn_all(
            "scissorhands_cal", hps, None, ({}, {}), data, seed=0, progress=False
        )
    assert seen["calibration"] == "temperature"
    assert seen["calibration_data"] is data.test


def test_population_halves_and_requests():
    data = audit.make_population(TINY, 6, seed=3)
    k, n = data.members.shape
    assert (k, n) == (6, TINY.pool_size) and data.candidates.sum() == TINY.candidates
    # every model trains on half the pool and forgets exactly the candidates it saw
    assert np.all(data.members.sum(1) == n // 2)
    assert np.all(data.forgets.sum(1) == TINY.candidates // 2)
    for row in range(k):
        members = set(np.flatnonzero(data.members[row]))
        cands = set(np.flatnonzero(data.candidates))
        assert set(np.flatnonzero(data.forgets[row])) == members & cands
        assert set(np.flatnonzero(data.retains[row])) == members - cands
        assert set(np.flatnonzero(data.unseen[row])) == cands - members
    # complementary pairs: each candidate is forgotten by exactly half of the models
    assert np.all(data.forgets[:, data.candidates].sum(0) == k // 2)
    again = audit.make_population(TINY, 6, seed=3)
    np.testing.assert_array_equal(again.members, data.members)
    with pytest.raises(ValueError, match="even number of at least 4"):
        audit.make_population(TINY, 5, seed=0)


def _fake_outputs(data, rng, *, shift):
    """Logits for K models: the true class gets ``base`` + noise; where a model forgot x,
    ``shift`` is added (a method that leaves a trace of x)."""
    k, n = data.members.shape
    labels = data.pool["label"]
    pool = rng.normal(0, 1, (k, n, 10))
    pool[:, np.arange(n), labels] += 3.0 + rng.normal(0, 1, (k, n))
    pool[data.forgets] += 0.0
    trace = np.zeros((k, n))
    trace[data.forgets] = shift
    pool[:, np.arange(n), labels] += trace
    test = rng.normal(0, 1, (k, len(data.test["label"]), 10))
    return {"pool": pool, "test": test}


def test_method_row_tells_a_trace_from_none_and_counts_accuracy_by_hand():
    data = audit.make_population(TINY, 40, seed=0)
    rng = np.random.default_rng(0)
    retrain = _fake_outputs(data, rng, shift=0.0)
    same = _fake_outputs(data, rng, shift=0.0)
    trace = _fake_outputs(data, rng, shift=6.0)
    row_same = audit.method_row("tiny", "same", same, retrain, data, num_bootstrap=200)
    row_trace = audit.method_row("tiny", "trace", trace, retrain, data, num_bootstrap=200)
    assert abs(row_same["ulira_accuracy"] - 0.5) < 0.06
    assert row_trace["ulira_accuracy"] > 0.9
    assert row_trace["forget_quality"] < row_same["forget_quality"]
    lo, hi = row_same["ulira_accuracy_ci"]
    assert lo <= row_same["ulira_accuracy"] <= hi
    # UA / RA / TA by a loop over models
    labels = data.pool["label"]
    ua, ra = [], []
    for k in range(data.members.shape[0]):
        pred = np.argmax(trace["pool"][k], -1)
        ua.append(100 - 100 * np.mean(pred[data.forgets[k]] == labels[data.forgets[k]]))
        ra.append(100 * np.mean(pred[data.retains[k]] == labels[data.retains[k]]))
    assert row_trace["UA"] == pytest.approx(np.mean(ua))
    assert row_trace["RA"] == pytest.approx(np.mean(ra))
    assert set(row_trace) >= {
        "protocol",
        "method",
        "ulira_accuracy",
        "epsilon",
        "forget_quality",
        "UA",
        "RA",
        "TA",
    }


@pytest.mark.slow
def test_audit_end_to_end_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    out = tmp_path / "audit"
    rows = audit.run_audit(
        out=out, protocols=[TINY], methods=["ft"], shadows=4, num_bootstrap=50, progress=False
    )
    assert [r["method"] for r in rows] == ["original", "retrain", "ft"]
    stored = json.loads((out / "audit.json").read_text())
    assert stored == json.loads(json.dumps(rows))
    # every row records the versions that computed it (the resumed run's own below)
    assert all(r["versions"]["jax"] and "commit" in r["versions"] for r in stored)
    assert "Versions: jax" in (out / "report.md").read_text()
    assert (out / "report.md").read_text().startswith("# Membership audit")
    assert (out / "report.png").stat().st_size > 0

    def boom(*args, **kwargs):
        raise AssertionError("a resumed audit must not train again")

    monkeypatch.setattr(population, "train_population", boom)
    again = audit.run_audit(
        out=out, protocols=[TINY], methods=["ft"], shadows=4, num_bootstrap=50, progress=False
    )
    assert [r["ulira_accuracy"] for r in again] == [r["ulira_accuracy"] for r in rows]
    with pytest.raises(ValueError, match="other setting"):
        audit.run_audit(out=out, protocols=[TINY], methods=["ft"], shadows=6, progress=False)
    # a damaged output file is detected by its digest and recomputed, not trusted
    monkeypatch.undo()
    path = out / "tiny" / "outputs" / "ft.npz"
    path.write_bytes(path.read_bytes()[:-20] + b"\0" * 20)
    fixed = audit.run_audit(
        out=out, protocols=[TINY], methods=["ft"], shadows=4, num_bootstrap=50, progress=False
    )
    assert fixed[-1]["ulira_accuracy"] == rows[-1]["ulira_accuracy"]


def test_cli_rejects_bad_input_before_creating_anything(tmp_path, capsys):
    out = tmp_path / "never"
    assert cli.main(["audit", "--out", str(out), "--shadows", "5", "--no-plot"]) == 2
    assert "even number of at least 4" in capsys.readouterr().err
    assert not out.exists()


def _setting_of(tmp_path, **kwargs) -> dict:
    """The ``setting.json`` that ``run_audit(**kwargs)`` records (run in a scratch dir
    whose first protocol's state is damaged on purpose, so that nothing is trained)."""
    scratch = tmp_path / "scratch"
    (scratch / "tiny" / "outputs").mkdir(parents=True)
    (scratch / "tiny" / "outputs" / "index.json").write_text("{")
    with pytest.raises(ValueError):
        audit.run_audit(out=scratch, **kwargs)
    return json.loads((scratch / "setting.json").read_text())


@pytest.mark.parametrize(
    "name,content",
    [
        ("tiny/outputs/index.json", '{"original": {"sha256": "ab'),
        ("audit.json", '[{"protocol": "tiny", "met'),
        ("setting.json", '{"protocols": {"ti'),
        ("tiny/outputs/index.json", "[1, 2]"),
    ],
)
def test_a_damaged_state_file_is_one_line_naming_it_before_any_training(
    tmp_path, monkeypatch, name, content
):
    def boom(*args, **kwargs):
        raise AssertionError("trained on a damaged state")

    monkeypatch.setattr(population, "train_population", boom)
    out = tmp_path / "audit"
    path = out / name
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ValueError) as info:  # was: "Invalid control character at: ..."
        audit.run_audit(out=out, protocols=[TINY], methods=["ft"], shadows=4, plot=False)
    message = str(info.value)
    assert str(path) in message and "is damaged" in message and "delete it" in message
    assert "\n" not in message


def test_an_audit_in_a_comparison_directory_says_whose_it_is(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    record = {"data": {}, "model": {}, "train": {}, "retrain": {}, "eval": {}, "config": "c.py"}
    (out / "setting.json").write_text(json.dumps(record))
    assert cli.main(["audit", "--out", str(out), "--quick", "--no-plot", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not record an audit" in err and "holds an audit" not in err
    assert json.loads((out / "setting.json").read_text()) == record


def test_other_settings_are_named_and_nothing_is_recorded(tmp_path):
    out = tmp_path / "audit"
    out.mkdir()
    stored = _setting_of(tmp_path, protocols=[TINY], methods=["ft"], shadows=4, plot=False)
    (out / "setting.json").write_text(json.dumps({**stored, "seed": 1}))
    with pytest.raises(ValueError, match=r"holds an audit made with other settings \(seed\)"):
        audit.run_audit(out=out, protocols=[TINY], methods=["ft"], shadows=4, plot=False)
    assert json.loads((out / "setting.json").read_text())["seed"] == 1


@pytest.mark.slow
def test_an_audit_stopped_by_sigterm_exits_75_and_resumes(tmp_path, monkeypatch, capsys):
    import os
    import signal
    import time

    from scissorhands_jax.baselines import METHODS

    tiny = protocol_file(tmp_path, TINY, "digits_small")
    ft = METHODS["ft"]

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        raise AssertionError("SIGTERM did not stop the audit")

    monkeypatch.setitem(METHODS, "ft", terminated)
    out = tmp_path / "audit"
    argv = ["audit", "--out", str(out), "--methods", "ft", "--shadows", "4", "--no-plot"]
    argv += ["--protocol", str(tiny)]
    assert cli.main([*argv, "--no-progress"]) == 75
    assert "stopped by SIGTERM" in capsys.readouterr().err
    index = json.loads((out / "digits_small" / "outputs" / "index.json").read_text())
    assert set(index) == {"original", "retrain"}  # saved before the signal, kept

    calls = []
    train_population = population.train_population

    def counted(*args, **kwargs):
        calls.append(args[3].shape)  # the membership matrix of the role trained
        return train_population(*args, **kwargs)

    monkeypatch.setitem(METHODS, "ft", ft)
    monkeypatch.setattr(population, "train_population", counted)
    assert cli.main([*argv, "--no-progress"]) == 0
    rows = json.loads((out / "audit.json").read_text())
    assert [r["method"] for r in rows] == ["original", "retrain", "ft"]
    assert len(calls) == 1  # the originals, which ft starts from; Retrain's outputs were kept
    assert len(calls) == 1  # the originals, which ft starts from; Retrain's outputs were kept


@pytest.mark.parametrize("command", ["audit", "tune"])
def test_a_bad_protocol_file_is_refused_before_anything_is_written(tmp_path, capsys, command):
    bad = dataclasses.replace(TINY, candidates=119)  # leaves one pool example outside F*
    out = tmp_path / "out"
    argv = [command, "--out", str(out), "--protocol", str(protocol_file(tmp_path, bad, "b"))]
    assert cli.main([*argv, "--no-progress"]) == 2
    assert "protocol.candidates must leave at least 2 pool examples" in capsys.readouterr().err
    assert not out.exists()
