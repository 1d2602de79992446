"""Bar charts as inline SVG, drawn on the server: no script, no CDN, nothing the Content-Security-Policy has to allow
(colours come from classes in console.css, not style attributes). Every text is escaped here, and every chart carries
a title and a description (``role="img"``) — the page puts the same figures in a table beside it for screen readers
and for copying.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 760
LABEL_WIDTH = 230  # room for a repository name (longer ones are cut with an ellipsis; the table has them whole)
VALUE_WIDTH = 110
ROW = 24
BAR = 16
TOP = 8
LEGEND = 26
MAX_LABEL = 32


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float]


def _cut(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    fmt: Callable[[float], str],
) -> Markup:
    """Horizontal bars, one per label, stacked by series (series ``i`` is drawn with class ``s<i>``); each row
    ends with its total as text. Empty input gives an empty chart that says so."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    area = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    height = TOP + ROW * max(len(labels), 1) + (LEGEND if len(series) > 1 else 0)
    if labels:
        top = max(range(len(labels)), key=lambda i: totals[i])
        summary = f"{len(labels)} bars; the largest is {labels[top]}: {fmt(totals[top])}."
    else:
        summary = "No data for this period."
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(summary)}</desc>',
    ]
    if not labels:
        out.append(f'<text x="0" y="{TOP + 14}" class="axis">No data for this period.</text>')
    for i, label in enumerate(labels):
        y = TOP + i * ROW
        out.append(
            f'<text x="{LABEL_WIDTH - 8}" y="{y + 13}" text-anchor="end" class="axis">{escape(_cut(label))}</text>'
        )
        x = float(LABEL_WIDTH)
        for n, s in enumerate(series):
            width = area * s.values[i] / peak
            if width > 0:
                out.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{max(width, 1):.1f}" height="{BAR}" class="s{n}">'
                    f"<title>{escape(label)}: {escape(s.name)} {escape(fmt(s.values[i]))}</title></rect>"
                )
                x += width
        out.append(f'<text x="{x + 6:.1f}" y="{y + 13}" class="value">{escape(fmt(totals[i]))}</text>')
    if len(series) > 1:
        y = TOP + ROW * max(len(labels), 1) + 6
        x = float(LABEL_WIDTH)
        for n, s in enumerate(series):
            out.append(f'<rect x="{x:.1f}" y="{y}" width="12" height="12" class="s{n}"/>')
            out.append(f'<text x="{x + 16:.1f}" y="{y + 11}" class="axis">{escape(s.name)}</text>')
            x += 24 + 8 * len(s.name)
    out.append("</svg>")
    return Markup("".join(out))
