"""The report files of the comparison and of the membership audit, and the one Markdown
table writer behind them (and behind the tune's report).

The comparison's ``results.csv``, ``report.md`` and ``report.png`` are pure functions of
the rows of ``results.json`` (:mod:`scissorhands_jax.experiment.compare`); the audit's
``report.md`` and ``report.png`` of the rows of ``audit.json``
(:mod:`scissorhands_jax.experiment.audit`). This module computes what the plots show;
:mod:`scissorhands_jax.experiment._plots` draws them (matplotlib, the ``plot`` extra, only
when a plot is drawn).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scissorhands_jax.experiment import _plots
from scissorhands_jax.experiment.rundir import write_text_atomic
from scissorhands_jax.metrics import INFORMATIVE_ATTACK_AUC, MIA_FEATURES

REFERENCE, ORIGINAL = "retrain", "original"
CSV_COLUMNS = (
    "scenario",
    "method",
    "seed",
    "UA",
    "RA",
    "TA",
    *(f"MIA_{f}" for f in MIA_FEATURES),
    *(f"MIA_{f}_attack_auc" for f in MIA_FEATURES),
    "MIA_loss",
    "ToW",
    "avg_gap",
    "avg_gap_mia",
    "rte_s",
    "error",
    "hyperparameters",
)
HIGHER_IS_BETTER, LOWER_IS_BETTER = ("ToW",), ("avg_gap", "rte_s")
"""Columns judged on their own; every other column is best when closest to Retrain, except
the attack AUCs, which describe the attack rather than the method and are never bold."""
UNINFORMATIVE = "†"

NULL_LEVEL = 0.95
"""The quantile of the audit's pair-flip null of Retrain taken as the bound of chance."""
SANITY_ORIGINAL_MIN = 0.60
"""The least U-LiRA accuracy of the untouched original for a protocol to be auditable:
besides standing clear of chance (:func:`sanity`), the attack must be right on at least
60 % of its decisions, or the methods' rows would have no room between the original and
chance to be ranked in."""


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table: the header line, the separator, one line per row of cells.

    Args:
      header: the column names.
      rows: the cells of each row, already formatted, as many as ``header``.

    Returns:
      The table's lines joined by newlines (no trailing newline).

    Raises:
      ValueError: a row whose number of cells differs from the header's.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        if len(cells) != len(header):
            raise ValueError(
                f"a table row has {len(cells)} cells for {len(header)} columns: {list(cells)}."
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_columns(mia_feature: str) -> tuple[str, ...]:
    """The columns of the Markdown table; the gap's MIA is always among them."""
    mias = ["MIA_entropy", "MIA_confidence", "MIA_loss"]
    if f"MIA_{mia_feature}" not in mias:
        mias.append(f"MIA_{mia_feature}")
    auc = [f"MIA_{mia_feature}_attack_auc"] if mia_feature in MIA_FEATURES else []
    return ("UA", "RA", "TA", *mias, *auc, "ToW", "avg_gap", "rte_s")


def _uninformative(entry: dict, column: str) -> bool:
    """True when ``column`` is an SVC MIA whose attack's mean held-out AUC is below
    :data:`INFORMATIVE_ATTACK_AUC` in this table entry."""
    auc = entry.get(f"{column}_attack_auc")
    return auc is not None and auc[0] < INFORMATIVE_ATTACK_AUC


def summarize(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> dict:
    """``{(scenario, method): {"n", "failed", column: (mean, std) | None}}`` over the rows
    without error (std with ddof 0), in row order."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault((row["scenario"], row["method"]), {"n": 0, "failed": 0, "_rows": []})
        if "error" in row:
            entry["failed"] += 1
        else:
            entry["n"] += 1
            entry["_rows"].append(row)
    for entry in out.values():
        ok = entry.pop("_rows")
        for col in columns:
            values = [r[col] for r in ok if r.get(col) is not None]
            entry[col] = (float(np.mean(values)), float(np.std(values))) if values else None
    return out


def best_methods(summary: dict, scenario: str, column: str) -> set[str]:
    """The unlearning methods (not Retrain, not the original) best in ``column``: the
    highest ToW, the lowest Avg. Gap and RTE, else the mean closest to Retrain's."""
    cands = {
        m: e[column][0]
        for (s, m), e in summary.items()
        if s == scenario and m not in (REFERENCE, ORIGINAL) and e.get(column) is not None
    }
    if not cands or column.endswith("_attack_auc"):
        return set()
    if column in HIGHER_IS_BETTER:
        score = {m: -v for m, v in cands.items()}
    elif column in LOWER_IS_BETTER:
        score = cands
    else:
        ref = summary.get((scenario, REFERENCE), {}).get(column)
        if ref is None:
            return set()
        score = {m: abs(v - ref[0]) for m, v in cands.items()}
    best = min(score.values())
    return {m for m, v in score.items() if np.isclose(v, best, rtol=0, atol=1e-9)}


def _cell(column: str, stat: tuple[float, float] | None, bold: bool) -> str:
    if stat is None:
        return "–"
    digits = 3 if column == "ToW" or column.endswith("_attack_auc") else 2
    text = f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"
    return f"**{text}**" if bold else text


def markdown_tables(
    rows: Sequence[dict[str, Any]], *, mia_feature: str, scenarios: Sequence[str]
) -> str:
    """One Markdown table per scenario: mean ± std per method, best per column in bold."""
    columns = table_columns(mia_feature)
    summary = summarize(rows, (*columns, *(f"MIA_{f}_attack_auc" for f in MIA_FEATURES)))
    header = {
        "avg_gap": f"Avg. Gap (MIA_{mia_feature})",
        "rte_s": "RTE (s)",
        f"MIA_{mia_feature}_attack_auc": f"attack AUC ({mia_feature})",
    }
    parts = []
    for scenario in _scenarios(rows, scenarios):
        best = {c: best_methods(summary, scenario, c) for c in columns}
        body = []
        for (s, method), entry in summary.items():
            if s != scenario:
                continue
            n = f"{entry['n']}" + (f" ({entry['failed']} failed)" if entry["failed"] else "")
            cells = [
                _cell(c, entry[c], method in best[c])
                + (f" {UNINFORMATIVE}" if _uninformative(entry, c) else "")
                for c in columns
            ]
            body.append([method, n, *cells])
        parts.append(markdown_table([scenario, "n", *(header.get(c, c) for c in columns)], body))
    return "\n\n".join(parts)


def _scenarios(rows, scenarios) -> list[str]:
    present = {r["scenario"] for r in rows}
    return [s for s in scenarios if s in present] + sorted(present - set(scenarios))


def ranking(rows: Sequence[dict[str, Any]], scenario: str, method: str = "scissorhands") -> str:
    """Where ``method`` ranks on Avg. Gap (and ToW) among the unlearning methods of one
    scenario, and its head-to-head against each, seed by seed."""
    ok = [r for r in rows if r["scenario"] == scenario and "error" not in r]
    by_method: dict[str, dict[int, dict]] = {}
    for r in ok:
        if r["method"] not in (REFERENCE, ORIGINAL) and r.get("avg_gap") is not None:
            by_method.setdefault(r["method"], {})[r["seed"]] = r
    if method not in by_method:
        return f"{scenario}: no finished {method} rows to rank."
    mean = {m: float(np.mean([r["avg_gap"] for r in v.values()])) for m, v in by_method.items()}
    tow = {m: float(np.mean([r["ToW"] for r in v.values()])) for m, v in by_method.items()}
    order = sorted(mean, key=mean.get)
    tow_order = sorted(tow, key=lambda m: -tow[m])
    lines = [
        f"**{scenario}**: {method} ranks {order.index(method) + 1} of {len(order)} on Avg. "
        f"Gap (lower is better; order: {', '.join(order)}) and "
        f"{tow_order.index(method) + 1} of {len(order)} on ToW.",
        "",
    ]
    mine, body = by_method[method], []
    for other in order:
        if other == method:
            continue
        seeds = sorted(set(mine) & set(by_method[other]))
        wins = sum(mine[s]["avg_gap"] < by_method[other][s]["avg_gap"] for s in seeds)
        body.append(
            [other, f"{mean[other]:.2f}", f"{mean[method]:.2f}", f"{wins}/{len(seeds)} seeds"]
        )
    header = ["baseline", "its Avg. Gap", method, f"{method} lower in"]
    return "\n".join([*lines, markdown_table(header, body)])


def markdown_report(
    rows: Sequence[dict[str, Any]],
    *,
    mia_feature: str,
    scenarios: Sequence[str],
    command: str | None = None,
) -> str:
    """The whole report.md: command, tables, ranking, failures, hyperparameters."""
    seeds = sorted({r["seed"] for r in rows})
    parts = [
        "# Unlearning comparison",
        "",
        f"Command: `{command}`" if command else "",
        "",
        f"Seeds {seeds}; mean ± std (ddof 0) over the seeds that finished. UA = 100 − "
        "forget accuracy, RA / TA = retain / test accuracy, MIA_* = MIA-efficacy of the "
        "SVC attack (entropy, confidence features) and of the logistic-regression loss "
        f"attack, all in percent; Avg. Gap against Retrain over UA, RA, TA and "
        f"MIA_{mia_feature}; ToW (Zhao et al. 2024) in [0, 1]; RTE in seconds, "
        "compilation included. **Bold**: the best unlearning method per column (closest "
        "to Retrain; for ToW the highest; for Avg. Gap and RTE the lowest). "
        f"attack AUC: how well the MIA_{mia_feature} attack tells its own members from "
        "non-members on held-out data (0.5 = not at all); "
        f"{UNINFORMATIVE} marks an SVC MIA whose attack AUC is below "
        f"{INFORMATIVE_ATTACK_AUC}: uninformative, its value is noise, and so is its share "
        "of the Avg. Gap.",
        "",
        markdown_tables(rows, mia_feature=mia_feature, scenarios=scenarios),
        "",
        "## Scissorhands against each baseline",
        "",
        "\n\n".join(ranking(rows, s) for s in _scenarios(rows, scenarios)),
    ]
    failed = [r for r in rows if "error" in r]
    if failed:
        parts += ["", "## Failed rows", ""]
        parts += [
            f"- {r['scenario']} / {r['method']} / seed {r['seed']}: {r['error']}" for r in failed
        ]
    hps: dict[str, Any] = {}
    for r in rows:
        hps.setdefault(r["method"], r.get("hyperparameters"))
    parts += ["", "## Hyperparameters", ""]
    body = [[m, f"`{json.dumps(h, sort_keys=True)}`"] for m, h in hps.items()]
    parts.append(markdown_table(["method", "hyperparameters"], body))
    return "\n".join(parts) + "\n"


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """``results.csv``: one line per row, :data:`CSV_COLUMNS` (hyperparameters as JSON)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        line = dict(row)
        line["hyperparameters"] = json.dumps(row.get("hyperparameters"), sort_keys=True)
        writer.writerow(line)
    return buf.getvalue()


def gap_components(rows: Sequence[dict[str, Any]], scenario: str) -> dict[str, dict[str, float]]:
    """Each method's Avg. Gap split into its terms: ``{method: {key: mean_s |row - ref| / 4}}``
    over the seeds that have both rows (the terms sum to the mean Avg. Gap)."""
    ok = [r for r in rows if r["scenario"] == scenario and "error" not in r]
    refs = {r["seed"]: r for r in ok if r["method"] == REFERENCE}
    out: dict[str, dict[str, list[float]]] = {}
    for r in ok:
        if r["method"] == REFERENCE or r["seed"] not in refs or "avg_gap_mia" not in r:
            continue
        keys = ("UA", "RA", "TA", r["avg_gap_mia"])
        terms = out.setdefault(r["method"], {k: [] for k in ("UA", "RA", "TA", "MIA")})
        for name, key in zip(("UA", "RA", "TA", "MIA"), keys, strict=True):
            terms[name].append(abs(r[key] - refs[r["seed"]][key]) / len(keys))
    return {m: {k: float(np.mean(v)) for k, v in t.items()} for m, t in out.items()}


def plot_report(
    rows: Sequence[dict[str, Any]], path: Path, *, mia_feature: str, scenarios: Sequence[str]
) -> None:
    """``report.png``, one column per scenario: the Avg. Gap of every method split into its
    four terms (lowest first), and UA vs TA of every method (mean ± std; Retrain a star)."""
    fig = report_figure(rows, mia_feature=mia_feature, scenarios=scenarios)
    _plots.save_figure(fig, path)


def report_figure(rows: Sequence[dict[str, Any]], *, mia_feature: str, scenarios: Sequence[str]):
    """The matplotlib ``Figure`` of :func:`plot_report`: every panel titled, both axes
    labelled, and a title saying what is compared over how many seeds."""
    names = _scenarios(rows, scenarios)
    return _plots.comparison_figure(
        {name: gap_components(rows, name) for name in names},
        summarize(rows, ("UA", "TA")),
        seeds=len({r["seed"] for r in rows if "error" not in r}),
        mia_feature=mia_feature,
        reference=REFERENCE,
    )


def write_report(
    rows: Sequence[dict[str, Any]],
    out: Path,
    *,
    mia_feature: str,
    scenarios: Sequence[str],
    command: str | None = None,
    plot: bool = True,
) -> None:
    """Writes ``results.csv``, ``report.md`` and (with ``plot``) ``report.png`` to ``out``.

    Raises:
      ValueError: a row whose Avg. Gap used another MIA than ``mia_feature`` (the
        report's column would name the wrong one).
    """
    other = sorted({r["avg_gap_mia"] for r in rows if "avg_gap_mia" in r} - {f"MIA_{mia_feature}"})
    if other:
        raise ValueError(
            f"rows whose Avg. Gap uses {other}, not MIA_{mia_feature}: recompute them "
            "(scissorhands_jax.experiment.compare recomputes the gap of every row) "
            "before the report."
        )
    write_text_atomic(out / "results.csv", csv_text(rows))
    write_text_atomic(
        out / "report.md",
        markdown_report(rows, mia_feature=mia_feature, scenarios=scenarios, command=command),
    )
    if plot:
        plot_report(rows, out / "report.png", mia_feature=mia_feature, scenarios=scenarios)


def sanity(rows: Sequence[dict[str, Any]], protocol: str) -> dict[str, Any]:
    """Whether the audit can tell anything on ``protocol``.

    The bound of chance is the design's own null: Retrain's outputs scored against
    themselves with the roles of the two models of each pair flipped at random
    (:func:`scissorhands_jax.metrics.ulira_null`); ``ulira_null_bound`` is its
    :data:`NULL_LEVEL` quantile. Valid when Retrain is consistent with that null (its
    accuracy at most the bound) and the original is detectable: its accuracy at least
    :data:`SANITY_ORIGINAL_MIN` and the lower end of its model-level interval above the
    bound. Rows without a null (written before it existed) are never valid.
    """
    by = {r["method"]: r for r in rows if r["protocol"] == protocol}
    orig, ret = by.get(ORIGINAL, {}), by.get(REFERENCE, {})
    bound = ret.get("ulira_null_bound")
    ok = "ulira_accuracy" in orig and "ulira_accuracy" in ret and bound is not None
    return {
        "original_ulira_accuracy": orig.get("ulira_accuracy"),
        "retrain_ulira_accuracy": ret.get("ulira_accuracy"),
        "null_range": ret.get("ulira_null_range"),
        "null_bound": bound,
        "valid": bool(
            ok
            and ret["ulira_accuracy"] <= bound
            and orig["ulira_accuracy"] >= SANITY_ORIGINAL_MIN
            and orig["ulira_accuracy_ci"][0] > bound
        ),
    }


AUDIT_LEGEND = (
    "U-LiRA acc.: accuracy of the likelihood-ratio attack at telling a model that trained on "
    "x and unlearned it from one that never saw x (0.5 = cannot tell = perfect unlearning; "
    "lower is better, down to 0.5); its Gaussians leave out the target model and its "
    "complementary partner. ± SE: leave-one-pair-out jackknife standard error (of the "
    "attack and of the forget quality: the models' share of the noise). Null range: "
    "where the attack lands by chance, from Retrain's own outputs with the roles of the two "
    "models of each pair flipped at random (2.5 % to 97.5 % of the draws; the bound is the "
    "95 % quantile). AUC: the same attack's ROC AUC. ε: median per-example privacy-loss "
    "estimate of the NeurIPS 2023 unlearning challenge, from threshold attacks in both "
    "directions (lower is better). Forget quality: the challenge's per-example score "
    "averaged (higher is better); it saturates below 1 with the number of models (Retrain "
    "scored against itself is far from 1), so compare it only at equal K, and read '÷ "
    "Retrain' (1 = as good as Retrain). One-sided: the same with the competition's own "
    "one-directional attacks, which miss a method that overshoots (forget examples less "
    "confident than under Retrain). Score: forget quality × RA/RA_retrain × TA/TA_retrain "
    "(higher is better), and ÷ Retrain's. Δφ test / forget: mean logit-confidence "
    "log(p_y / (1 − p_y)) on the test set and on each model's forget set, minus Retrain's: "
    "a forget shift with no test shift is forgetting aimed at the forget set; a test shift "
    "as large says the model is under- (or over-) confident everywhere, and the attack "
    "reads that too. UA = 100 − accuracy on each model's forget set, RA / TA = retain / "
    "test accuracy (percent), best when closest to Retrain. RTE: seconds per model. "
    "Brackets: 95 % bootstrap intervals: over model pairs and candidate examples at once "
    "for U-LiRA (the models are a sample too), over candidate examples for ε and forget "
    "quality, over models for accuracy."
)


def _ci(row: dict, key: str, digits: int) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    ci = row.get(f"{key}_ci")
    text = f"{value:.{digits}f}"
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else text


def _num(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "–" if value is None else format(value, fmt)


def audit_table(rows: Sequence[dict[str, Any]], protocol: str) -> str:
    """A Markdown table of one protocol's audit rows."""
    columns = (
        "method",
        "U-LiRA acc.",
        "± SE",
        "AUC",
        "ε",
        "forget quality",
        "± SE",
        "÷ Retrain",
        "one-sided",
        "score",
        "÷ Retrain",
        "Δφ test",
        "Δφ forget",
        "UA",
        "RA",
        "TA",
        "RTE (s)",
    )
    body = [
        (
            r["method"],
            _ci(r, "ulira_accuracy", 3),
            _num(r, "ulira_accuracy_se", ".3f"),
            _num(r, "ulira_auc", ".3f"),
            _ci(r, "epsilon", 2),
            _ci(r, "forget_quality", 3),
            _num(r, "forget_quality_se", ".3f"),
            _num(r, "forget_quality_rel", ".2f"),
            _num(r, "forget_quality_one_sided", ".3f"),
            _num(r, "challenge_score", ".3f"),
            _num(r, "challenge_score_rel", ".2f"),
            _num(r, "confidence_test_shift", "+.2f"),
            _num(r, "confidence_forget_shift", "+.2f"),
            _ci(r, "UA", 1),
            _ci(r, "RA", 1),
            _ci(r, "TA", 1),
            _num(r, "rte_s", ".2f"),
        )
        for r in rows
        if r["protocol"] == protocol
    ]
    return markdown_table(columns, body)


def _versions_line(rows: Sequence[dict[str, Any]]) -> str | None:
    stamps = [r["versions"] for r in rows if r.get("versions")]
    if not stamps:
        return None
    v = stamps[-1]
    names = ("jax", "jaxlib", "flax", "optax", "numpy")
    stack = ", ".join(f"{n} {v.get(n)}" for n in names)
    return (
        f"Versions: {stack}; Python {v.get('python')}; {v.get('backend')} "
        f"({v.get('device_kind')}); commit {v.get('commit') or 'unknown'} (each row of "
        "audit.json records the versions it was computed with)."
    )


def tuning_note(rows: Sequence[dict[str, Any]], protocol: str) -> str:
    """Where each method's hyperparameters came from: a tune (its budget, seed and search
    space) or the defaults; empty when no row was tuned."""
    mine = [r for r in rows if r["protocol"] == protocol and r.get("tuning")]
    tuned = [r for r in mine if r["tuning"]["source"] == "tuned"]
    if not tuned:
        return ""
    first = tuned[0]["tuning"]
    lines = [
        f"Hyperparameters tuned by `scissorhands tune` ({first['trials_per_method']} trials "
        f"per method on tuning seed {first['tuning_seed']}; objective: {first['objective']}):"
    ]
    for r in tuned:
        t = r["tuning"]
        chosen = ", ".join(f"{k}={v}" for k, v in t["params"].items())
        space = "; ".join(f"{k} ∈ {v}" for k, v in (t.get("space") or {}).items())
        lines.append(f"- {r['method']}: {chosen} (space: {space})")
    default = [r["method"] for r in mine if r["tuning"]["source"] == "default"]
    if default:
        lines.append(f"- defaults of the digits comparison: {', '.join(default)}")
    return "\n".join(lines)


def audit_markdown(
    rows: Sequence[dict[str, Any]],
    command: str | None = None,
    whys: dict[str, str] | None = None,
) -> str:
    """The audit's whole report.md: per protocol its sanity verdict and table, then the
    legend; ``whys`` maps a protocol's name to the line on what it is for."""
    whys = whys or {}
    parts = ["# Membership audit", ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    stamp = _versions_line(rows)
    if stamp:
        parts += [stamp, ""]
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        check = sanity(rows, protocol)
        n = next(r["n_models"] for r in rows if r["protocol"] == protocol)
        if check["null_bound"] is None:
            null = "No null of the attack (Retrain's row predates it): the audit cannot be judged."
        else:
            low, high = check["null_range"]
            null = (
                f"Null range of the U-LiRA accuracy (Retrain against itself, pair roles "
                f"flipped): [{low:.3f}, {high:.3f}], {NULL_LEVEL:.0%} bound "
                f"{check['null_bound']:.3f}."
            )
        verdict = (
            "valid: the untouched original is detectable and Retrain is not"
            if check["valid"]
            else "weak: the untouched original is barely told from Retrain (needs Retrain "
            "within the null's bound, and the original ≥ "
            f"{SANITY_ORIGINAL_MIN} with its interval above the bound); a method scoring "
            "near 0.5 here may simply have changed nothing, while scores well above the "
            "original's still show a trace of the forget set"
        )
        why = f"{whys[protocol]}. " if whys.get(protocol) else ""
        orig, ret = check["original_ulira_accuracy"], check["retrain_ulira_accuracy"]
        accuracies = ", ".join(
            f"of {name} {value:.3f}"
            for name, value in (("the original", orig), ("Retrain", ret))
            if value is not None
        )
        parts += [
            f"## {protocol}",
            "",
            f"{why}{n} models. {null} Audit {verdict} (U-LiRA accuracy {accuracies}).",
            "",
            audit_table(rows, protocol),
            "",
        ]
        note = tuning_note(rows, protocol)
        if note:
            parts += [note, ""]
    parts += [AUDIT_LEGEND, ""]
    return "\n".join(parts)


def audit_plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """The audit's report.png: U-LiRA accuracy with its model-level interval over the null
    range, and the forget quality relative to Retrain's, per method."""
    _plots.save_figure(_plots.audit_figure(rows), path)


def write_audit_report(
    rows: Sequence[dict[str, Any]],
    out: Path,
    *,
    whys: dict[str, str] | None = None,
    plot: bool = True,
    command: str | None = None,
) -> None:
    """Writes the audit's report.md (and report.png) into ``out``, each atomically."""
    write_text_atomic(out / "report.md", audit_markdown(rows, command, whys))
    if plot:
        audit_plot(rows, out / "report.png")
