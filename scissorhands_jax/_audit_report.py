"""The audit's report files: report.md and report.png, pure functions of ``audit.json``'s rows.

matplotlib is used through its object API (a ``Figure`` and an Agg canvas), so drawing a
report never changes the backend of a notebook or script that imports us.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

LEGEND = (
    "U-LiRA acc.: accuracy of the likelihood-ratio attack at telling a model that trained on "
    "x and unlearned it from one that never saw x (0.5 = cannot tell = perfect unlearning; "
    "lower is better, down to 0.5). AUC: the same attack's ROC AUC. ε: median per-example "
    "privacy-loss estimate of the NeurIPS 2023 unlearning challenge, from threshold "
    "attacks in both directions (lower is better). Forget quality: the challenge's "
    "per-example score averaged (1 = indistinguishable from Retrain; higher is better); "
    "one-sided: the same with the competition's own one-directional attacks, which miss a "
    "method that overshoots (forget examples less confident than under Retrain). Score: "
    "forget quality × RA/RA_retrain × TA/TA_retrain (higher is better). UA = 100 − "
    "accuracy on each model's forget set, RA / TA = retain / test accuracy (percent), best "
    "when closest to Retrain. RTE: seconds per model. Brackets: 95 % bootstrap intervals "
    "(over candidate examples for the attack scores, over models for accuracy)."
)


def _ci(row: dict, key: str, digits: int) -> str:
    value = row.get(key)
    if value is None:
        return "–"
    ci = row.get(f"{key}_ci")
    text = f"{value:.{digits}f}"
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else text


def table(rows: Sequence[dict[str, Any]], protocol: str) -> str:
    """A Markdown table of one protocol's rows."""
    head = (
        "| method | U-LiRA acc. | AUC | ε | forget quality | one-sided | score | UA | RA | TA "
        "| RTE (s) |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        if r["protocol"] != protocol:
            continue
        lines.append(
            f"| {r['method']} | {_ci(r, 'ulira_accuracy', 3)} | {r['ulira_auc']:.3f} | "
            f"{_ci(r, 'epsilon', 2)} | {_ci(r, 'forget_quality', 3)} | "
            f"{r.get('forget_quality_one_sided', float('nan')):.3f} | "
            f"{r['challenge_score']:.3f} | {_ci(r, 'UA', 1)} | {_ci(r, 'RA', 1)} | "
            f"{_ci(r, 'TA', 1)} | {r.get('rte_s', float('nan')):.2f} |"
        )
    return "\n".join(lines)


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


def markdown(rows: Sequence[dict[str, Any]], command: str | None = None) -> str:
    """The whole report.md: per protocol its sanity verdict and table, then the legend."""
    from scissorhands_jax.audit import PROTOCOLS, SANITY_ORIGINAL_MIN, SANITY_RETRAIN_MAX, sanity

    parts = ["# Membership audit", ""]
    if command:
        parts += [f"Command: `{command}`", ""]
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        check = sanity(rows, protocol)
        n = next(r["n_models"] for r in rows if r["protocol"] == protocol)
        verdict = (
            "valid: the untouched original is detectable and Retrain is not"
            if check["valid"]
            else "weak: the untouched original is barely told from Retrain (needs original "
            f"≥ {SANITY_ORIGINAL_MIN} and Retrain ≤ {SANITY_RETRAIN_MAX}); a method scoring "
            "near 0.5 here may simply have changed nothing, while scores well above the "
            "original's still show a trace of the forget set"
        )
        why = PROTOCOLS[protocol].why if protocol in PROTOCOLS else ""
        parts += [
            f"## {protocol}",
            "",
            f"{why}. {n} models. Audit {verdict} (U-LiRA accuracy of the original "
            f"{check['original_ulira_accuracy']:.3f}, of Retrain "
            f"{check['retrain_ulira_accuracy']:.3f}).",
            "",
            table(rows, protocol),
            "",
        ]
        note = tuning_note(rows, protocol)
        if note:
            parts += [note, ""]
    parts += [LEGEND, ""]
    return "\n".join(parts)


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """report.png: U-LiRA accuracy with its interval and the forget quality, per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    fig = Figure(figsize=(11, 3.6 * len(protocols)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(protocols), 2, squeeze=False)
    for (left, right), protocol in zip(axes, protocols, strict=True):
        mine = [r for r in rows if r["protocol"] == protocol]
        names = [r["method"] for r in mine]
        acc = [r["ulira_accuracy"] for r in mine]
        err = [
            [a - r["ulira_accuracy_ci"][0] for a, r in zip(acc, mine, strict=True)],
            [r["ulira_accuracy_ci"][1] - a for a, r in zip(acc, mine, strict=True)],
        ]
        left.barh(names, acc, xerr=err, color="tab:blue")
        left.axvline(0.5, color="k", lw=1, ls="--")
        left.set_xlim(0.4, 1.0)
        left.invert_yaxis()
        left.set_title(f"{protocol}: U-LiRA accuracy (0.5 = perfect)")
        right.barh(names, [r["forget_quality"] for r in mine], color="tab:green")
        right.set_xlim(0, 1)
        right.invert_yaxis()
        right.set_title(f"{protocol}: forget quality (1 = like Retrain)")
    fig.savefig(path, dpi=110)


def write(
    rows: Sequence[dict[str, Any]], out: Path, *, plot: bool = True, command: str | None = None
) -> None:
    """Writes report.md (and report.png) into ``out``, each atomically."""
    from scissorhands_jax._report import write_text_atomic

    write_text_atomic(out / "report.md", markdown(rows, command))
    if plot:
        tmp = out / "report.tmp.png"
        globals()["plot"](rows, tmp)
        tmp.replace(out / "report.png")
