"""`convsync report`: one self-contained HTML page about a range of dates.

Everything is inline (SVG charts, one <style>, no script, no image, no font, no link), so the
page opens offline and can be mailed as one file. Every figure is computed from the date
documents with the same rules as `build_daily_summary`, and every chart element carries
`data-series` / `data-label` / `data-value`, so what a chart shows can be checked.
Conversation text and model output (topics, errors) are escaped: they are untrusted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import DateDocument, StatusSummary
from convsync_pipeline.core.summary import build_daily_summary
from convsync_pipeline.operations import DocumentProblem, Progress, load_many, stored_dates
from convsync_pipeline.operations.deadletters import FailedConversation, failed_in
from convsync_pipeline.store.base import Store

TOP_TOPICS = 12
MAX_FAILED_ROWS = 500
STATUS_COLORS = {
    "success": "#2e7d32",
    "failed": "#c62828",
    "pending": "#f9a825",
    "processing": "#1565c0",
}
SENTIMENT_COLORS = {"positive": "#43a047", "neutral": "#90a4ae", "negative": "#e53935"}
ESCALATION_COLOR = "#8e24aa"
TOPIC_COLOR = "#00897b"
_COUNTED = ("total", "pending", "processing", "success", "failed")


@dataclass
class DayFigures:
    date: str
    version: int
    counts: StatusSummary
    analysed: int  # success conversations that carry an analysis
    sentiment: dict[str, int]
    mean_sentiment: float | None
    escalations: int
    topics: Counter[str]
    tokens: int

    @property
    def success_rate(self) -> float | None:
        return self.counts.success / self.counts.total if self.counts.total else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalations / self.analysed if self.analysed else None


@dataclass
class ReportData:
    store_url: str
    start: str | None
    end: str | None
    generated_at: str
    days: list[DayFigures] = field(default_factory=list)
    failed: list[FailedConversation] = field(default_factory=list)
    problems: list[DocumentProblem] = field(default_factory=list)

    @property
    def totals(self) -> StatusSummary:
        total = Counter[str]()
        for day in self.days:
            total.update({name: getattr(day.counts, name) for name in _COUNTED})
        return StatusSummary(**{name: total[name] for name in _COUNTED})

    @property
    def sentiment(self) -> dict[str, int]:
        total = Counter(dict.fromkeys(SENTIMENT_COLORS, 0))
        for day in self.days:
            total.update(day.sentiment)
        return dict(total)

    @property
    def topics(self) -> Counter[str]:
        total = Counter[str]()
        for day in self.days:
            total.update(day.topics)
        return total

    @property
    def escalations(self) -> int:
        return sum(day.escalations for day in self.days)

    @property
    def analysed(self) -> int:
        return sum(day.analysed for day in self.days)


def day_figures(document: DateDocument) -> DayFigures:
    """One date's figures, through the daily summary so both always agree."""
    summary = build_daily_summary(document)
    analyses = [
        c.analysis
        for c in document.conversations
        if c.processing_status == "success" and isinstance(c.analysis, dict)
    ]
    topics = Counter(
        str(topic).lower() for a in analyses for topic in (a.get("topics") or []) if topic
    )
    return DayFigures(
        date=document.date,
        version=document.version,
        counts=summary.summary,
        analysed=len(analyses),
        sentiment=dict(summary.sentiment),
        mean_sentiment=summary.meanSentimentScore,
        escalations=summary.escalations,
        topics=topics,
        tokens=summary.tokens.get("totalTokens", 0),
    )


def collect_report(
    store: Store,
    *,
    start: str | None = None,
    end: str | None = None,
    progress: Progress | None = None,
) -> ReportData:
    data = ReportData(store_url=store.url, start=start, end=end, generated_at=utc_now_iso())
    for _, found in load_many(store, stored_dates(store, start, end), progress):
        if isinstance(found, DocumentProblem):
            data.problems.append(found)
        else:
            data.days.append(day_figures(found.document))
            data.failed.extend(failed_in(found.document))
    return data


# -- rendering ------------------------------------------------------------------------------

_WIDTH = 760
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 14, 34


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _nice_ceiling(value: float) -> float:
    """The axis top: the smallest 1, 2 or 5 × 10^k at or above `value`."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _empty_chart(chart_id: str, label: str) -> str:
    return (
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {_WIDTH} 60" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
        '<text x="20" y="35" class="muted">no data in this range</text></svg>'
    )


def _columns_chart(
    chart_id: str, label: str, dates: Sequence[str], series: Sequence[tuple[str, str, list[int]]]
) -> str:
    """Stacked columns, one per date; zero segments are not drawn."""
    if not dates:
        return _empty_chart(chart_id, label)
    height = 260
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    base = _TOP + plot_h
    top = _nice_ceiling(max(sum(values[i] for _, _, values in series) for i in range(len(dates))))
    slot = plot_w / len(dates)
    bar = max(slot * 0.72, 0.8)
    parts = [
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
    ]
    for k in range(5):
        value = top * k / 4
        y = base - plot_h * k / 4
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_num(round(value, 2))}</text>"
        )
    for i, date in enumerate(dates):
        x = _LEFT + i * slot + (slot - bar) / 2
        y = base
        for name, color, values in series:
            if values[i] <= 0:
                continue
            h = values[i] / top * plot_h
            y -= h
            parts.append(
                f'<rect x="{x:.2f}" y="{y:.2f}" width="{bar:.2f}" height="{h:.2f}" '
                f'fill="{color}" data-series="{escape(name)}" data-label="{date}" '
                f'data-value="{values[i]}"><title>{date} {escape(name)}: {values[i]}</title></rect>'
            )
    same_year = len({d[:4] for d in dates}) == 1
    step = max(1, math.ceil(len(dates) / 10))
    for i in range(0, len(dates), step):
        x = _LEFT + (i + 0.5) * slot
        text = dates[i][5:] if same_year else dates[i]
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{base + 16}" text-anchor="middle">{text}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bars_chart(chart_id: str, label: str, items: Sequence[tuple[str, int, str]]) -> str:
    """Horizontal bars, one per item (name, value, colour), with the value at the bar's end."""
    if not items or not any(value for _, value, _ in items):
        return _empty_chart(chart_id, label)
    row, label_w = 26, 170
    height = _TOP + row * len(items) + 6
    span = _WIDTH - label_w - 70
    top = max(value for _, value, _ in items)
    parts = [
        f'<svg id="{chart_id}" class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>'
    ]
    for i, (name, value, color) in enumerate(items):
        y = _TOP + i * row
        w = value / top * span if top else 0
        shown = name if len(name) <= 24 else name[:23] + "…"
        parts.append(
            f'<text class="axis" x="{label_w - 8}" y="{y + 15}" text-anchor="end">'
            f"{escape(shown)}</text>"
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.2f}" height="{row - 8}" fill="{color}" '
            f'data-series="{escape(name)}" data-label="{escape(name)}" data-value="{value}">'
            f"<title>{escape(name)}: {value}</title></rect>"
            f'<text class="value" x="{label_w + w + 6:.2f}" y="{y + 15}">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _legend(colors: dict[str, str]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{color}"></span>{escape(name)}</li>'
        for name, color in colors.items()
    )
    return f'<ul class="legend">{items}</ul>'


def _cells(row: Sequence[object]) -> str:
    return "".join(
        f'<td class="n">{_num(c)}</td>'
        if isinstance(c, int | float) and not isinstance(c, bool)
        else f"<td>{escape(str(c))}</td>"
        for c in row
    )


def _table(
    table_id: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    total: Sequence[object] | None = None,
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(f"<tr>{_cells(r)}</tr>" for r in rows)
    foot = f'<tfoot><tr class="total">{_cells(total)}</tr></tfoot>' if total else ""
    return (
        f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot}</table>'
    )


_CSS = """
:root{--fg:#1c2430;--muted:#66707c;--line:#e3e7ec;--bg:#fff;--card:#f6f8fa}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1000px;margin:0 auto;padding:24px}h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px}.muted{color:var(--muted);fill:var(--muted)}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:10px;
margin:16px 0}.kpi{background:var(--card);border-radius:8px;padding:10px 12px}
.kpi b{display:block;font-size:22px}.kpi span{color:var(--muted);font-size:12px}
figure{margin:0 0 8px}figcaption{font-weight:600;margin-bottom:4px}
.chart{width:100%;height:auto;display:block}.chart .grid{stroke:var(--line)}
.chart .axis,.chart .value{font-size:11px;fill:var(--muted)}
.legend{list-style:none;padding:0;margin:4px 0 0;display:flex;gap:14px;font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
table{border-collapse:collapse;width:100%;font-size:13px;margin-top:6px}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:var(--card)}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600}.grid2{display:grid;grid-template-columns:1fr 1fr;gap:24px}
@media (max-width:760px){.grid2{grid-template-columns:1fr}}
@media print{main{padding:0}}
"""


def render_report(data: ReportData) -> str:
    """The page: headline figures, four charts, then every number in tables."""
    days = data.days
    dates = [d.date for d in days]
    totals = data.totals
    first = data.start or (dates[0] if dates else "–")
    last = data.end or (dates[-1] if dates else "–")
    kpis = [
        ("dates", len(days)),
        ("conversations", totals.total),
        ("success", totals.success),
        ("failed", totals.failed),
        ("pending", totals.pending),
        ("processing", totals.processing),
        ("success rate", _pct(totals.success / totals.total if totals.total else None)),
        ("escalations", data.escalations),
    ]
    kpi_html = "".join(
        f'<div class="kpi" data-kpi="{escape(name)}"><b>{escape(str(value))}</b>'
        f"<span>{escape(name)}</span></div>"
        for name, value in kpis
    )
    outcomes = _columns_chart(
        "chart-outcomes",
        "Conversations per date by status",
        dates,
        [(s, c, [getattr(d.counts, s) for d in days]) for s, c in STATUS_COLORS.items()],
    )
    sentiment = data.sentiment
    sentiment_chart = _bars_chart(
        "chart-sentiment",
        "Sentiment of analysed conversations",
        [(name, sentiment.get(name, 0), color) for name, color in SENTIMENT_COLORS.items()],
    )
    top_topics = data.topics.most_common(TOP_TOPICS)
    topics_chart = _bars_chart(
        "chart-topics", "Top topics", [(t, n, TOPIC_COLOR) for t, n in top_topics]
    )
    escalations_chart = _columns_chart(
        "chart-escalations",
        "Escalations needed per date",
        dates,
        [("escalations", ESCALATION_COLOR, [d.escalations for d in days])],
    )
    day_rows: list[list[object]] = [
        [
            d.date,
            d.counts.total,
            d.counts.success,
            d.counts.failed,
            d.counts.pending,
            d.counts.processing,
            _pct(d.success_rate),
            d.analysed,
            d.escalations,
            "–" if d.mean_sentiment is None else f"{d.mean_sentiment:+.2f}",
            d.tokens,
            d.version,
        ]
        for d in days
    ]
    total_row: list[object] = [
        "total",
        totals.total,
        totals.success,
        totals.failed,
        totals.pending,
        totals.processing,
        _pct(totals.success / totals.total if totals.total else None),
        data.analysed,
        data.escalations,
        "",
        sum(d.tokens for d in days),
        "",
    ]
    day_table = _table(
        "table-days",
        [
            "date",
            "conversations",
            "success",
            "failed",
            "pending",
            "processing",
            "success rate",
            "analysed",
            "escalations",
            "mean sentiment",
            "tokens",
            "version",
        ],
        day_rows,
        total_row if days else None,
    )
    analysed = sum(sentiment.values())
    sentiment_table = _table(
        "table-sentiment",
        ["sentiment", "conversations", "share"],
        [
            [name, count, _pct(count / analysed if analysed else None)]
            for name, count in ((name, sentiment.get(name, 0)) for name in SENTIMENT_COLORS)
        ],
    )
    topic_table = _table("table-topics", ["topic", "conversations"], top_topics)
    failed_rows = [
        [f.date, f.id, f.attempts, f.last_error or "", f.first_words]
        for f in data.failed[:MAX_FAILED_ROWS]
    ]
    failed_more = (
        f'<p class="muted">… and {len(data.failed) - MAX_FAILED_ROWS} more: '
        "<code>convsync failed --json</code> lists them all.</p>"
        if len(data.failed) > MAX_FAILED_ROWS
        else ""
    )
    failed_table = (
        _table(
            "table-failed",
            ["date", "id", "attempts", "last error", "first customer words"],
            failed_rows,
        )
        + failed_more
        if data.failed
        else '<p class="muted" id="table-failed">No failed conversations.</p>'
    )
    problems = (
        "<h2>Documents not included</h2>"
        + _table(
            "table-problems", ["document", "reason"], [[p.key, p.reason] for p in data.problems]
        )
        if data.problems
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>convsync report {escape(first)} – {escape(last)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>convsync report</h1>
<p class="muted">Dates {escape(first)} to {escape(last)} · store {escape(data.store_url)} ·
generated {escape(data.generated_at)}</p>
<section class="kpis">{kpi_html}</section>
<h2>Outcomes over time</h2>
<figure><figcaption>Conversations per date by status</figcaption>{outcomes}
{_legend(STATUS_COLORS)}</figure>
<div class="grid2">
<figure><h2>Sentiment mix</h2>{sentiment_chart}</figure>
<figure><h2>Top topics</h2>{topics_chart}</figure>
</div>
<h2>Escalations</h2>
<figure><figcaption>Conversations whose analysis says escalation is needed</figcaption>
{escalations_chart}</figure>
<h2>Per date</h2>
{day_table}
<div class="grid2">
<section><h2>Sentiment</h2>{sentiment_table}</section>
<section><h2>Topics</h2>{topic_table}</section>
</div>
<h2>Failed conversations ({len(data.failed)})</h2>
{failed_table}
{problems}
</main>
</body>
</html>
"""
