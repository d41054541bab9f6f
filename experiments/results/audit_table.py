"""One Markdown table from the audits of several seeds: the tables of docs/results.md, section 3.

    python experiments/results/audit_table.py DIR_SEED0 DIR_SEED1 [...] [--also D0 D1 ...]

Each DIR holds the ``audit.json`` of one ``scissorhands audit`` run (same protocol, same
methods, different ``--seed``). Rows are sorted by the mean U-LiRA accuracy over the
seeds; each cell lists the seeds in the order given. ``--also`` adds the methods of other
audits of the same seeds (in the same order) as rows marked "untuned", after checking
that their original and Retrain rows are the same (the same populations). Reads only the
JSON files: no jax.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REFERENCES = ("original", "retrain")


def _setting(row: dict) -> str:
    tuning = row.get("tuning") or {}
    params = tuning.get("params")
    if not params:
        return "–" if row["method"] in REFERENCES else "defaults (untuned)"
    short = {"project_every": "every", "projection": "", "project_epochs": "projected epochs"}
    words = []
    for key, value in params.items():
        name = short.get(key, key)
        if key == "lam":
            name = "λ"
        words.append(f"{name} {value}".strip())
    return ", ".join(words)


def _shift(value: float) -> str:
    """A confidence shift; a collapsed model's (beyond ±100 logit units) as its order."""
    return f"{value:+.2f}" if abs(value) < 100 else f"{value:+.0e}"


def _interval(row: dict) -> str:
    low, high = row["ulira_accuracy_ci"]
    return f"{row['ulira_accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def table(dirs: list[Path], also: list[Path] = ()) -> str:
    runs = [json.loads((d / "audit.json").read_text()) for d in dirs]
    by_method = [{r["method"]: r for r in run} for run in runs]
    methods = [r["method"] for r in runs[0]]
    if also:
        if len(also) != len(dirs):
            raise SystemExit(f"--also needs one directory per seed ({len(dirs)})")
        for d, rows, extra in zip(dirs, by_method, also, strict=True):
            other = {r["method"]: r for r in json.loads((extra / "audit.json").read_text())}
            for ref in REFERENCES:
                if other[ref]["ulira_accuracy"] != rows[ref]["ulira_accuracy"]:
                    raise SystemExit(f"{extra} and {d} audit different populations ({ref})")
            for m, r in other.items():
                if m not in REFERENCES:
                    rows[f"{m} (untuned)"] = r
        methods += [f"{m} (untuned)" for m in other if m not in REFERENCES]
    for d, rows in zip(dirs, by_method, strict=True):
        missing = set(methods) - set(rows)
        if missing:
            raise SystemExit(f"{d}/audit.json lacks rows for {sorted(missing)}")
    protocols = {r["protocol"] for run in runs for r in run}
    models = {r["n_models"] for run in runs for r in run}
    lines = [
        f"protocol {', '.join(sorted(protocols))}; {', '.join(map(str, sorted(models)))} "
        "models per role; seeds in the order " + ", ".join(d.name for d in dirs)
    ]
    for d, rows in zip(dirs, by_method, strict=True):
        ret = rows["retrain"]
        low, high = ret["ulira_null_range"]
        lines.append(
            f"- {d.name}: null range [{low:.3f}, {high:.3f}], bound "
            f"{ret['ulira_null_bound']:.3f}; original {rows['original']['ulira_accuracy']:.3f}"
        )
    seeds = " / ".join(d.name for d in dirs)
    lines += [
        "",
        "| method | tuned setting | "
        + " | ".join(f"U-LiRA, {d.name}" for d in dirs)
        + f" | UA ({seeds}) | TA ({seeds}) | Δφ test ({seeds}) | FQ ÷ Retrain ({seeds}) |",
        "|---|---|" + "---|" * (len(dirs) + 4),
    ]

    def mean_acc(m: str) -> float:
        return sum(rows[m]["ulira_accuracy"] for rows in by_method) / len(by_method)

    for m in sorted(methods, key=lambda m: (m != "original", m != "retrain", mean_acc(m))):
        rs = [rows[m] for rows in by_method]
        setting = "defaults (untuned)" if m.endswith("(untuned)") else _setting(rs[0])
        cells = [m, setting, *(_interval(r) for r in rs)]
        cells.append(" / ".join(f"{r['UA']:.1f}" for r in rs))
        cells.append(" / ".join(f"{r['TA']:.1f}" for r in rs))
        cells.append(" / ".join(_shift(r["confidence_test_shift"]) for r in rs))
        cells.append(" / ".join(f"{r['forget_quality_rel']:.2f}" for r in rs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        raise SystemExit(__doc__)
    cut = args.index("--also") if "--also" in args else len(args)
    print(table([Path(a) for a in args[:cut]], [Path(a) for a in args[cut + 1 :]]))
