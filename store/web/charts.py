"""Server-rendered charts: small inline SVG bar charts with a data table beside them.

No script and no library: the SVG is built here, escaped, and drawn by the browser. Every
chart carries a ``<title>`` and ``<desc>`` (``role="img"``), a tooltip per bar, and the same
numbers as a table (``_macros/charts.html``), so screen readers and text browsers get
everything. Colours come from the stylesheet (classes, not inline styles: the CSP forbids
those), so dark mode and print styles apply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

# The drawing's own coordinate system; the SVG scales to its container (viewBox).
WIDTH = 640
HEIGHT = 220
_LEFT = 64  # room for the y-axis labels
_RIGHT = 8
_TOP = 12
_BOTTOM = 28  # room for the x-axis labels
_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


@dataclass(frozen=True)
class Point:
    """One bar: its label under the axis, its value, and the value as people read it."""

    label: str
    value: int
    display: str
    long_label: str = ""  # for the tooltip and the table ("2026-11-28" rather than "28")

    @property
    def full_label(self) -> str:
        return self.long_label or self.label


@dataclass(frozen=True)
class Chart:
    """A bar chart: ``svg`` for the picture, ``points`` for the table fallback."""

    id: str
    title: str
    description: str
    points: tuple[Point, ...]
    label_header: str = "Day"
    value_header: str = "Value"
    axis_format: Callable[[int], str] | None = None  # y-axis labels; plain numbers if None

    @property
    def total(self) -> int:
        return sum(p.value for p in self.points)

    @property
    def empty(self) -> bool:
        return not any(p.value for p in self.points)

    @property
    def svg(self) -> Markup:
        return render_bars(self, max_display=self.axis_format)


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 times 10^n at or above ``value`` (at least 2): a round axis
    top whose half is a whole number too."""
    if value <= 2:
        return 2
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover (the loop always returns)


def _label_every(count: int) -> int:
    """Label every n-th bar so that at most about eight labels fit under the axis."""
    return max(1, -(-count // 8))


def render_bars(chart: Chart, *, max_display: Callable[[int], str] | None = None) -> Markup:
    """The chart as an ``<svg>`` element (escaped text, numeric geometry only)."""
    points = chart.points
    n = max(len(points), 1)
    top = _nice_max(max((p.value for p in points), default=0))
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / n
    bar_w = min(max(slot * 0.72, 1.0), 48.0)  # a lone bar stays a bar, not a block
    base_y = _TOP + plot_h
    cid = escape(chart.id)
    out: list[str] = [
        f'<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{cid}-title" aria-describedby="{cid}-desc" '
        f'preserveAspectRatio="xMidYMid meet" focusable="false">',
        f'<title id="{cid}-title">{escape(chart.title)}</title>',
        f'<desc id="{cid}-desc">{escape(chart.description)}</desc>',
    ]
    # Grid: the baseline, the middle and the top, each with its value.
    top_label = max_display(top) if max_display else _short_number(top)
    mid = top / 2
    mid_label = max_display(int(mid)) if max_display else _short_number(mid)
    grid = [(_TOP, top_label), (_TOP + plot_h / 2, mid_label), (base_y, "0")]
    if mid != int(mid):
        del grid[1]  # counts have no halves
    for y, text in grid:
        out.append(
            f'<line class="chart-grid" x1="{_LEFT}" y1="{y:.1f}" x2="{WIDTH - _RIGHT}" '
            f'y2="{y:.1f}"/>'
            f'<text class="chart-axis" x="{_LEFT - 6}" y="{y + 4:.1f}" '
            f'text-anchor="end">{escape(text)}</text>'
        )
    every = _label_every(len(points))
    for i, point in enumerate(points):
        x = _LEFT + i * slot + (slot - bar_w) / 2
        h = plot_h * point.value / top if top else 0
        if point.value and h < 1.5:
            h = 1.5  # a non-zero value stays visible
        out.append(
            f'<rect class="chart-bar" x="{x:.1f}" y="{base_y - h:.1f}" width="{bar_w:.1f}" '
            f'height="{h:.1f}"><title>{escape(point.full_label)}: {escape(point.display)}'
            f"</title></rect>"
        )
        if i % every == 0:
            cx = _LEFT + i * slot + slot / 2
            out.append(
                f'<text class="chart-axis" x="{cx:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(point.label)}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (every piece of text above is escaped)


def _short_number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


# --- the charts of the store ---------------------------------------------------------


def pulls_chart(days: Sequence[tuple[date, int]], *, chart_id: str, subject: str) -> Chart:
    """Manifest pulls per day (``hub.pull_history``), oldest first."""
    points = tuple(
        Point(
            label=f"{d.day}" if d.day != 1 and i else f"{_MONTHS[d.month - 1]} {d.day}",
            value=count,
            display=f"{count:,} pull{'s' if count != 1 else ''}",
            long_label=d.isoformat(),
        )
        for i, (d, count) in enumerate(days)
    )
    total = sum(p.value for p in points)
    busiest = max(points, key=lambda p: p.value, default=None)
    span = f"from {points[0].long_label} to {points[-1].long_label}" if points else ""
    description = f"{total:,} pulls of {subject} in {len(points)} days {span}".strip() + "."
    if busiest is not None and busiest.value:
        description += f" Busiest day: {busiest.long_label} with {busiest.display}."
    return Chart(
        id=chart_id,
        title=f"Pulls per day: {subject}",
        description=description,
        points=points,
        label_header="Day",
        value_header="Pulls",
    )


def sum_days(histories: Iterable[Sequence[tuple[date, int]]]) -> list[tuple[date, int]]:
    """Day-by-day sums of several pull histories of the same days."""
    totals: dict[date, int] = {}
    for history in histories:
        for day, count in history:
            totals[day] = totals.get(day, 0) + count
    return sorted(totals.items())


def _month_label(month: str) -> str:
    year, _, number = month.partition("-")
    return f"{_MONTHS[int(number) - 1]} {year}"


def sales_charts(
    rows: Iterable[object],
    *,
    money: Callable[[int, str], str],
    months: int = 12,
    chart_id: str = "sales",
) -> list[Chart]:
    """Net revenue per month, one chart per currency (amounts in different currencies are
    never added up). ``rows`` are ``store.billing.sales.SalesRow``; the last ``months``
    months that have sales are shown, with the months between them filled in as zeros."""
    by_currency: dict[str, dict[str, int]] = {}
    for row in rows:
        currency: str = row.currency  # type: ignore[attr-defined]
        month: str = row.month  # type: ignore[attr-defined]
        net: int = row.net_minor  # type: ignore[attr-defined]
        per_month = by_currency.setdefault(currency, {})
        per_month[month] = per_month.get(month, 0) + net
    charts = []
    for currency in sorted(by_currency):
        per_month = by_currency[currency]
        filled = _month_range(min(per_month), max(per_month))[-months:]
        points = tuple(
            Point(
                label=_month_label(m),
                value=max(per_month.get(m, 0), 0),
                display=money(per_month.get(m, 0), currency),
                long_label=m,
            )
            for m in filled
        )
        total = sum(per_month.get(m, 0) for m in filled)
        charts.append(
            Chart(
                id=f"{chart_id}-{currency}",
                title=f"Net sales per month ({currency.upper()})",
                description=(
                    f"Net sales in {currency.upper()} from {filled[0]} to {filled[-1]}: "
                    f"{money(total, currency)} in total."
                ),
                points=points,
                label_header="Month",
                value_header=f"Net ({currency.upper()})",
                axis_format=_compact_money(money, currency),
            )
        )
    return charts


def _compact_money(money: Callable[[int, str], str], currency: str) -> Callable[[int], str]:
    def fmt(amount_minor: int) -> str:
        text = money(amount_minor, currency)
        return re.sub(r"[.,]00\b", "", text)

    return fmt


def _month_range(first: str, last: str) -> list[str]:
    year, month = int(first[:4]), int(first[5:7])
    end = (int(last[:4]), int(last[5:7]))
    out: list[str] = []
    while (year, month) <= end and len(out) < 1200:
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out
