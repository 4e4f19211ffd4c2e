"""Bar charts as inline SVG: no script, no fonts or images fetched, prints crisp."""

from __future__ import annotations

from markupsafe import Markup, escape

from cxm_cli.audit.views import Chart

WIDTH = 640
LABEL_WIDTH = 170
VALUE_WIDTH = 90
ROW_HEIGHT = 28
PADDING = 6


def bar_chart_svg(chart: Chart) -> Markup:
    """A horizontal bar chart; every bar is a ``rect``, longest = largest value."""
    bars = chart.bars
    height = PADDING * 2 + ROW_HEIGHT * max(1, len(bars))
    track = WIDTH - LABEL_WIDTH - VALUE_WIDTH
    largest = chart.maximum or max((bar.value for bar in bars), default=0) or 1
    parts = [
        f'<svg class="chart" data-chart="{escape(chart.key)}" role="img" '
        f'aria-label="{escape(chart.title)}" viewBox="0 0 {WIDTH} {height}" '
        f'preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(chart.title)}</title>",
    ]
    for index, bar in enumerate(bars):
        top = PADDING + index * ROW_HEIGHT
        middle = top + ROW_HEIGHT / 2
        length = round(track * min(max(bar.value, 0) / largest, 1), 1)
        parts.append(
            f'<text class="label" x="{LABEL_WIDTH - 8}" y="{middle}" '
            f'text-anchor="end" dominant-baseline="middle">{escape(bar.label)}</text>'
            f'<rect class="track" x="{LABEL_WIDTH}" y="{top + 5}" width="{track}" '
            f'height="{ROW_HEIGHT - 10}" rx="3"/>'
            f'<rect class="bar" x="{LABEL_WIDTH}" y="{top + 5}" width="{length}" '
            f'height="{ROW_HEIGHT - 10}" rx="3"/>'
            f'<text class="value" x="{LABEL_WIDTH + length + 6}" y="{middle}" '
            f'dominant-baseline="middle">{escape(bar.text)}</text>'
        )
    if not bars:
        parts.append(
            f'<text class="label" x="{LABEL_WIDTH}" y="{PADDING + ROW_HEIGHT / 2}" '
            'dominant-baseline="middle">no data in this period</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def text_bars(chart: Chart, width: int = 30) -> list[tuple[str, str, str]]:
    """(label, bar of block characters, value text) rows for plain-text output."""
    largest = chart.maximum or max((bar.value for bar in chart.bars), default=0) or 1
    rows = []
    for bar in chart.bars:
        cells = min(max(bar.value, 0) / largest, 1) * width
        block = "\u2588" * int(cells)
        if bar.value > 0 and not block:
            block = "\u258f"
        rows.append((bar.label, block, bar.text))
    return rows
