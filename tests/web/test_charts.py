"""Server-rendered charts (store/web/charts.py): accessible SVG, escaped text, honest sums."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from store.billing.sales import SalesRow
from store.web.charts import pulls_chart, sales_charts, sum_days
from store.web.templating import format_money


def test_pulls_chart_is_an_accessible_image_with_one_bar_per_day() -> None:
    days = [(date(2026, 10, 30) + timedelta(days=i), i % 4) for i in range(30)]
    chart = pulls_chart(days, chart_id="p", subject="acme/<app>")
    svg = str(chart.svg)
    assert svg.startswith('<svg class="chart-svg"') and 'role="img"' in svg
    assert 'aria-labelledby="p-title"' in svg and 'aria-describedby="p-desc"' in svg
    assert "acme/&lt;app&gt;" in svg and "<app>" not in svg  # text is escaped
    assert svg.count('<rect class="chart-bar"') == 30
    assert "style=" not in svg  # the CSP forbids inline styles
    assert chart.total == sum(c for _, c in days)
    assert "Busiest day" in chart.description
    assert [p.label for p in chart.points[:3]] == ["Oct 30", "31", "Nov 1"]


def test_a_month_without_pulls_is_empty() -> None:
    chart = pulls_chart([(date(2026, 11, 1), 0)], chart_id="p", subject="x/y")
    assert chart.empty
    assert chart.svg  # still draws (axes only)


def test_sum_days_adds_histories_day_by_day() -> None:
    d = date(2026, 11, 1)
    assert sum_days([[(d, 1)], [(d, 2)], []]) == [(d, 3)]


@dataclass
class _Row:
    month: str
    currency: str
    net_minor: int


def test_sales_charts_one_per_currency_with_gaps_filled() -> None:
    rows = [
        SalesRow("2026-09", "a/b", "B", "pro", "Pro", "usd", 1, 1900, 0, 0),
        SalesRow("2026-11", "a/b", "B", "pro", "Pro", "usd", 2, 3800, 0, 1900),
        SalesRow("2026-11", "a/b", "B", "pro", "Pro", "eur", 1, 1500, 0, 0),
    ]
    charts = sales_charts(rows, money=format_money)
    assert [c.id for c in charts] == ["sales-eur", "sales-usd"]
    usd = charts[1]
    assert [p.long_label for p in usd.points] == ["2026-09", "2026-10", "2026-11"]
    assert [p.display for p in usd.points] == ["$19.00", "$0.00", "$19.00"]
    assert "$38.00 in total" in usd.description
    assert "$20" in str(usd.svg)  # the axis top, as money


def test_refunds_larger_than_sales_never_draw_below_the_axis() -> None:
    charts = sales_charts([_Row("2026-11", "usd", -500)], money=format_money)
    assert charts[0].points[0].value == 0
    assert charts[0].points[0].display == format_money(-500, "usd")  # the table tells the truth
