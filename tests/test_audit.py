"""The membership audit runner: populations, rows, resume, CLI (scissorhands_jax.audit)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from scissorhands_jax import audit, cli
from scissorhands_jax.commands.audit import PROTOCOL_NAMES

TINY = dataclasses.replace(
    audit.PROTOCOLS["digits_small"], name="tiny", pool_size=120, candidates=40, epochs=2
)


def test_cli_protocol_names_match_the_library():
    assert set(PROTOCOL_NAMES) == set(audit.PROTOCOLS)
    assert audit.DEFAULT_PROTOCOL in audit.PROTOCOLS


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

    monkeypatch.setattr(audit.pop, "train_population", boom)
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
