"""Line charts as inline SVG, drawn on the server in plain Python: no JavaScript, no external file.

``line_chart`` draws one ``<polyline>`` per series over shared axes, with a few round-number
ticks and a legend. The run page draws every curve of a training run with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

# Colour-blind-safe (Okabe–Ito), in the order series are drawn.
LEGEND_COLUMNS = 2
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (x, y); points with a missing or non-finite y are left out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round-number ticks (steps of 1, 2 or 5 × 10^k) covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value += step
    return ticks


def tick_label(value: float) -> str:
    """Whole numbers in full (steps: ``2,500``), anything else with three significant digits."""
    if value == int(value) and abs(value) < 1e9:
        return f"{int(value):,}"
    return f"{value:.3g}"


def line_chart(
    series: Sequence[Series], *, title: str, width: int = 440, height: int = 220, x_label: str = "step",
) -> str:
    """An ``<svg>`` element (a string of markup, every text escaped) with one polyline per series."""
    drawn = [(s.name, [(float(x), float(y)) for x, y in s.points if _finite(x) and _finite(y)]) for s in series]
    drawn = [(name, points) for name, points in drawn if points]
    left, right, top, bottom = 56, 28, 28, 40 + 16 * math.ceil(len(drawn) / LEGEND_COLUMNS)
    plot_w, plot_h = width - left - right, height - top - bottom
    if plot_h < 40:
        height += 40 - plot_h
        plot_h = 40
    parts = [
        f'<svg class="line-chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="16" class="chart-title" font-size="13" font-weight="600" fill="#333">{escape(title)}</text>',
    ]
    if not drawn:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" font-size="12" '
            f'fill="#777">no points yet</text></svg>'
        )
        return "".join(parts)

    xs = [x for _, points in drawn for x, _ in points]
    ys = [y for _, points in drawn for _, y in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high == y_low:
        pad = abs(y_low) * 0.1 or 1.0
        y_low, y_high = y_low - pad, y_high + pad
    else:
        pad = (y_high - y_low) * 0.05
        y_low, y_high = y_low - pad, y_high + pad

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + (y_high - y) / (y_high - y_low) * plot_h

    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#ccc"/>')
    for tick in nice_ticks(y_low, y_high):
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#555">{tick_label(tick)}</text>'
        )
    for tick in nice_ticks(x_low, x_high):
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#999"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11" fill="#555">'
            f"{tick_label(tick)}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w}" y="{top + plot_h + 30}" text-anchor="end" font-size="11" fill="#777">'
        f"{escape(x_label)}</text>"
    )
    for index, (name, points) in enumerate(drawn):
        colour = PALETTE[index % len(PALETTE)]
        coordinates = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        parts.append(
            f'<polyline data-series="{escape(name)}" points="{coordinates}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5" stroke-linejoin="round"/>'
        )
        last_x, last_y = points[-1]
        parts.append(f'<circle cx="{px(last_x):.1f}" cy="{py(last_y):.1f}" r="2.5" fill="{colour}"/>')
        row, column = divmod(index, LEGEND_COLUMNS)
        lx, ly = left + column * (plot_w / LEGEND_COLUMNS), top + plot_h + 46 + row * 16
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 8:.1f}" width="12" height="3" fill="{colour}"/>')
        parts.append(
            f'<text x="{lx + 16:.1f}" y="{ly - 3:.1f}" font-size="11" fill="#333">{escape(name)} '
            f"({tick_label(last_y)})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
