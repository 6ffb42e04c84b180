"""Charts of a report: stacked win/tie/loss bars with CI whiskers, as PNG or SVG bytes.

matplotlib is imported inside the function (the web process loads it only when a chart is
drawn), through its object API and the Agg canvas: no pyplot state, safe in threaded servers.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from annotation.criteria import Criterion

CHART_FORMATS = {"png": "image/png", "svg": "image/svg+xml"}
COLORS = {"a_wins": "#2b6cb0", "tie": "#a0aec0", "b_wins": "#c05621"}
TITLES = tuple((c.value, c.label) for c in Criterion)


def win_tie_loss_chart(table: Sequence[Mapping[str, Any]], fmt: str = "png") -> bytes:
    """One horizontal bar per comparison and criterion: A wins | ties | B wins, summing to 100%.

    Whiskers mark the 95% Wilson interval of the A-wins share (at the A/tie boundary) and of the
    B-wins share (at the tie/B boundary). A comparison without results gets a labelled empty bar.
    """
    if fmt not in CHART_FORMATS:
        raise ValueError(f"chart format must be one of {', '.join(CHART_FORMATS)}, got {fmt!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bars = []
    for row in table:
        for key, title in TITLES:
            bars.append((f"{row['model_a']} vs {row['model_b']}\n{title}", row.get(key)))
    height = 0.9 + 0.55 * max(1, len(bars))
    figure = Figure(figsize=(8, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(bars)))[::-1]
    for y, (_label, cells) in zip(positions, bars):
        if not cells or cells.get("n", 0) == 0 or cells["a_wins"]["rate"] is None:
            axes.text(0.5, y, "no complete prompts yet", ha="center", va="center", fontsize=8, color="#4a5568")
            continue
        left = 0.0
        for outcome in ("a_wins", "tie", "b_wins"):
            rate = cells[outcome]["rate"]
            axes.barh(y, rate, left=left, color=COLORS[outcome], height=0.6, edgecolor="white", linewidth=0.5)
            if rate >= 0.08:
                axes.text(left + rate / 2, y, f"{100 * rate:.1f}", ha="center", va="center", fontsize=8, color="white")
            left += rate
        a, b = cells["a_wins"], cells["b_wins"]
        if a["ci_low"] is not None:
            axes.errorbar(a["rate"], y, xerr=[[a["rate"] - a["ci_low"]], [a["ci_high"] - a["rate"]]],
                          fmt="none", ecolor="black", capsize=3, linewidth=1)
        if b["ci_low"] is not None:
            boundary = 1.0 - b["rate"]
            axes.errorbar(boundary, y + 0.12, xerr=[[b["ci_high"] - b["rate"]], [b["rate"] - b["ci_low"]]],
                          fmt="none", ecolor="#1a202c", capsize=3, linewidth=1, linestyle="--")
    axes.set_yticks(positions, [label for label, _ in bars], fontsize=8)
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.7, len(bars) - 0.3)
    axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"])
    axes.set_xlabel("share of prompts (majority of votes); whiskers: 95% Wilson intervals")
    from matplotlib.patches import Patch

    axes.legend(
        handles=[Patch(color=COLORS[k], label=t) for k, t in (("a_wins", "A wins"), ("tie", "Tie"), ("b_wins", "B wins"))],
        loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(bars) < 3 else -0.08), ncol=3, fontsize=8, frameon=False,
    )
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    figure.savefig(buffer, format=fmt, metadata=metadata)
    return buffer.getvalue()
