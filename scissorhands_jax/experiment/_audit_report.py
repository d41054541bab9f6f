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


def table(rows: Sequence[dict[str, Any]], protocol: str) -> str:
    """A Markdown table of one protocol's rows."""
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
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        if r["protocol"] != protocol:
            continue
        cells = (
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
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def markdown(rows: Sequence[dict[str, Any]], command: str | None = None) -> str:
    """The whole report.md: per protocol its sanity verdict and table, then the legend."""
    from scissorhands_jax.experiment.audit import NULL_LEVEL, PROTOCOLS, SANITY_ORIGINAL_MIN, sanity

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
        why = PROTOCOLS[protocol].why if protocol in PROTOCOLS else ""
        orig, ret = check["original_ulira_accuracy"], check["retrain_ulira_accuracy"]
        accuracies = ", ".join(
            f"of {name} {value:.3f}"
            for name, value in (("the original", orig), ("Retrain", ret))
            if value is not None
        )
        parts += [
            f"## {protocol}",
            "",
            f"{why}. {n} models. {null} Audit {verdict} (U-LiRA accuracy {accuracies}).",
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
    """report.png: U-LiRA accuracy with its model-level interval over the null range, and
    the forget quality relative to Retrain's, per method."""
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
        null = next((r.get("ulira_null_range") for r in mine if r.get("ulira_null_range")), None)
        if null:
            left.axvspan(*null, color="0.85", zorder=0)
        left.set_xlim(0.4, 1.0)
        left.invert_yaxis()
        shaded = "; grey: null range" if null else ""
        left.set_title(f"{protocol}: U-LiRA accuracy (0.5 = perfect{shaded})")
        left.set_xlabel("attack accuracy, unlearned vs retrained (bars: 95 % interval)")
        left.set_ylabel("method")
        relative = [r.get("forget_quality_rel") for r in mine]
        if all(v is not None for v in relative):
            right.barh(names, relative, color="tab:green")
            right.axvline(1.0, color="k", lw=1, ls="--")
            right.set_xlim(0, max(1.2, *relative))
            right.set_title(f"{protocol}: forget quality ÷ Retrain's (1 = as good)")
        else:  # rows written before the relative score
            right.barh(names, [r["forget_quality"] for r in mine], color="tab:green")
            right.set_xlim(0, 1)
            right.set_title(f"{protocol}: forget quality (higher is better)")
        right.set_xlabel("forget quality (NeurIPS 2023 challenge's ε-based score)")
        right.invert_yaxis()
    fig.savefig(path, dpi=110)


def write(
    rows: Sequence[dict[str, Any]], out: Path, *, plot: bool = True, command: str | None = None
) -> None:
    """Writes report.md (and report.png) into ``out``, each atomically."""
    from scissorhands_jax.experiment._report import write_text_atomic

    write_text_atomic(out / "report.md", markdown(rows, command))
    if plot:
        tmp = out / "report.tmp.png"
        globals()["plot"](rows, tmp)
        tmp.replace(out / "report.png")
