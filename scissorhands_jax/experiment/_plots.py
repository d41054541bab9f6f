"""The figures of the comparison's and the audit's ``report.png``.

matplotlib is imported only to draw (the ``plot`` extra), through its object API (a
``Figure`` with its own Agg canvas), so drawing a report never changes the backend of a
notebook or script that imports us, nor pyplot's figures. What is drawn is computed by
:mod:`scissorhands_jax.experiment.report`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scissorhands_jax.experiment.rundir import write_bytes_atomic


def check_plotting() -> None:
    """Raises ValueError when matplotlib is missing (before any work is done)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ValueError(
            "report.png needs matplotlib: pip install matplotlib (in a clone: pip install "
            "'.[plot]'), or pass --no-plot (plot=False)."
        ) from err


def save_figure(fig, path: Path) -> None:
    """Writes ``fig`` to ``path`` as a PNG, atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes_atomic(path, buf.getvalue())


def comparison_figure(
    gaps: dict[str, dict[str, dict[str, float]]],
    summary: dict,
    *,
    seeds: int,
    mia_feature: str,
    reference: str,
):
    """The comparison's figure, one column per scenario: the Avg. Gap of every method
    split into its four terms (lowest first), and UA vs TA (mean ± std; the reference a
    star).

    Args:
      gaps: scenario -> method -> the Avg. Gap's terms (``UA``, ``RA``, ``TA``, ``MIA``).
      summary: ``(scenario, method) -> {"n", "UA": (mean, std), "TA": (mean, std)}``.
      seeds: how many seeds the rows hold (for the title).
      mia_feature: the MIA of the gap (for the legend).
      reference: the reference method's name.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7 * len(gaps), 10))
    FigureCanvasAgg(fig)
    fig.suptitle(
        f"Unlearning methods against Retrain (the oracle trained without the forget set), "
        f"{seeds} seed{'s' if seeds != 1 else ''} per method"
    )
    axes = fig.subplots(2, len(gaps), squeeze=False, height_ratios=(1, 1))
    colors = {"UA": "tab:blue", "RA": "tab:orange", "TA": "tab:green", "MIA": "tab:purple"}
    for col, (scenario, parts) in enumerate(gaps.items()):
        top, bottom = axes[0, col], axes[1, col]
        order = sorted(parts, key=lambda m: sum(parts[m].values()))
        left = np.zeros(len(order))
        for term, color in colors.items():
            widths = np.array([parts[m][term] for m in order])
            label = f"|Δ MIA_{mia_feature}| / 4" if term == "MIA" else f"|Δ {term}| / 4"
            top.barh(order, widths, left=left, color=color, label=label)
            left += widths
        for y, total in enumerate(left):
            top.text(total, y, f" {total:.1f}", va="center", fontsize=8)
        top.invert_yaxis()
        for tick in top.get_yticklabels():
            if tick.get_text() == "scissorhands":
                tick.set_color("tab:red")
                tick.set_fontweight("bold")
        top.set_title(f"{scenario}: Avg. Gap to Retrain by term (lower is better)")
        top.set_xlabel("Avg. Gap to Retrain (percentage points, mean over seeds)")
        top.set_ylabel("method")
        top.set_xlim(0, 1.12 * max(left.max(initial=0.0), 1e-9))
        top.legend(fontsize=8, loc="upper right")
        top.grid(axis="x", alpha=0.3)
        markers = "osD^v<>pPhX"
        entries = [(m, e) for (s, m), e in summary.items() if s == scenario and e["n"]]
        for i, (method, e) in enumerate(entries):
            (ua, ua_sd), (ta, ta_sd) = e["UA"], e["TA"]
            is_reference = method == reference
            ours = "tab:red" if method == "scissorhands" else None
            bottom.errorbar(
                ua,
                ta,
                xerr=ua_sd,
                yerr=ta_sd,
                fmt="*" if is_reference else markers[i % len(markers)],
                ms=15 if is_reference else 8,
                color="black" if is_reference else ours,
                capsize=2,
                alpha=0.85,
                label=method,
            )
        bottom.set_xlabel("UA (%) = 100 − forget accuracy")
        bottom.set_ylabel("TA (%)")
        bottom.set_title(f"{scenario}: UA vs TA, mean ± std over seeds (★ Retrain)")
        bottom.legend(fontsize=8, ncol=2, loc="best")
        bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def audit_figure(rows: Sequence[dict[str, Any]]):
    """The audit's figure, one row of panels per protocol of ``rows`` (the rows of
    ``audit.json``): U-LiRA accuracy with its model-level interval over the null range,
    and the forget quality relative to Retrain's, per method."""
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
    return fig
