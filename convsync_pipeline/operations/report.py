"""`convsync report`: one self-contained HTML page about a range of dates.

Everything is inline (HTML/CSS charts, one <style>, no script, no image, no font, no link), so
the page opens offline and can be mailed as one file, and it reads well from a phone's width to
a wide screen (a test renders it in Chromium at both and checks layout, label sizes, numbers).
Every figure is computed from the date documents with the same rules as `build_daily_summary`,
and every chart element carries `data-series` / `data-label` / `data-value`, so what a chart
shows can be checked.
Conversation text and model output (topics, errors) are untrusted: every text goes through
`_text`, the page's one way to put text on it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from convsync_pipeline.core.dates import utc_now_iso
from convsync_pipeline.core.document import DateDocument, StatusSummary
from convsync_pipeline.core.summary import build_daily_summary, topics_of
from convsync_pipeline.operations import DocumentProblem, Progress, load_many, stored_dates
from convsync_pipeline.operations.deadletters import FailedConversation, failed_in
from convsync_pipeline.settings import display_redactor
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
    topics = Counter(topic for a in analyses for topic in topics_of(a))
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
#
# Charts are plain HTML and CSS (bars are boxes sized in %, labels are text), not scaled SVG:
# their labels keep the page's font size at every width, from a phone to a wide screen.

MAX_X_LABELS = 7  # date labels under a column chart: few enough to fit a phone's width


def _text(value: object) -> str:
    """Every piece of text the page shows, and every attribute value, passes through here:
    escaped, because topics, errors and customer words are untrusted model or user output,
    and redacted (the page is mailed around): text through the display redactor."""
    if isinstance(value, str):
        value = display_redactor()(value)
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _count_ticks(top_value: int) -> list[int]:
    """Whole-number ticks from 0 for an axis of counts: steps of 1, 2 or 5 × 10^k, at most
    five of them, the last at or above `top_value`."""
    wanted = max(top_value, 1) / 5
    power = 10 ** math.floor(math.log10(wanted)) if wanted >= 1 else 1
    step = next(int(m * power) for m in (1, 2, 5, 10) if m * power >= wanted)
    return list(range(0, step * math.ceil(max(top_value, 1) / step) + 1, step))


def _empty_chart(chart_id: str, label: str) -> str:
    return (
        f'<div id="{chart_id}" class="chart empty" role="img" aria-label="{_text(label)}">'
        '<p class="muted">no data in this range</p></div>'
    )


def _x_labels(dates: Sequence[str]) -> str:
    """At most MAX_X_LABELS labels, each centred under the middle column of its group (odd
    group sizes), `MM-DD` with the year under the first label of each year."""
    step = math.ceil(len(dates) / MAX_X_LABELS)
    step += step % 2 == 0 and step > 1
    parts = []
    year = None
    for start in range(0, len(dates), step):
        group = dates[start : start + step]
        date = group[len(group) // 2]
        text = _text(date[5:])
        if date[:4] != year and len({d[:4] for d in dates}) > 1:
            text += f"<br>{date[:4]}"
        year = date[:4]
        parts.append(f'<span class="xl" style="flex-grow:{len(group)}">{text}</span>')
    return "".join(parts)


def _columns_chart(
    chart_id: str, label: str, dates: Sequence[str], series: Sequence[tuple[str, str, list[int]]]
) -> str:
    """Stacked columns, one per date, on a y axis from 0 to a round number; zero segments are
    not drawn."""
    if not dates:
        return _empty_chart(chart_id, label)
    values_at = [sum(values[i] for _, _, values in series) for i in range(len(dates))]
    marks = _count_ticks(max(values_at))
    top = marks[-1]
    ticks = "".join(
        f'<span class="tick" style="bottom:{m / top * 100:.3f}%">{m}</span>' for m in marks
    )
    lines = "".join(
        f'<span class="gridline" style="bottom:{m / top * 100:.3f}%"></span>' for m in marks
    )
    axis_width = f"width:calc({len(str(top))}ch + 2px)"
    columns = []
    for i, date in enumerate(dates):
        segments = "".join(
            f'<span class="seg" style="height:{values[i] / top * 100:.3f}%;background:{color}" '
            f'data-series="{_text(name)}" data-label="{_text(date)}" data-value="{values[i]}" '
            f'title="{_text(date)} {_text(name)}: {values[i]}"></span>'
            for name, color, values in series
            if values[i] > 0
        )
        columns.append(f'<span class="col">{segments}</span>')
    return (
        f'<div id="{chart_id}" class="chart cols" role="img" aria-label="{_text(label)}">'
        f'<div class="yaxis" style="{axis_width}">{ticks}</div>'
        f'<div class="plot">{lines}{"".join(columns)}</div>'
        f'<div class="xaxis">{_x_labels(dates)}</div></div>'
    )


def _bars_chart(
    chart_id: str, label: str, items: Sequence[tuple[str, int, str]], *, shares: bool = False
) -> str:
    """Horizontal bars, one row per item (name, value, colour): the name, the bar, the value
    (and its share of the total)."""
    if not items or not any(value for _, value, _ in items):
        return _empty_chart(chart_id, label)
    top = max(value for _, value, _ in items)
    total = sum(value for _, value, _ in items)
    rows = []
    for name, value, color in items:
        share = f' <span class="share">{_pct(value / total)}</span>' if shares else ""
        rows.append(
            f'<div class="bar-row"><span class="bar-label" title="{_text(name)}">'
            f"{_text(name)}</span>"
            f'<span class="track"><span class="bar" style="width:{value / top * 100:.2f}%;'
            f'background:{color}" data-series="{_text(name)}" data-label="{_text(name)}" '
            f'data-value="{value}" title="{_text(name)}: {value}"></span></span>'
            f'<span class="bar-value">{value}{share}</span></div>'
        )
    return (
        f'<div id="{chart_id}" class="chart bars" role="img" aria-label="{_text(label)}">'
        f"{''.join(rows)}</div>"
    )


def _legend(colors: dict[str, str]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{color}"></span>{_text(name)}</li>'
        for name, color in colors.items()
    )
    return f'<ul class="legend">{items}</ul>'


def _cells(row: Sequence[object]) -> str:
    return "".join(
        f'<td class="n">{_num(c)}</td>'
        if isinstance(c, int | float) and not isinstance(c, bool)
        else f"<td>{_text(c)}</td>"
        for c in row
    )


def _table(
    table_id: str,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    total: Sequence[object] | None = None,
) -> str:
    """A table in a box that scrolls sideways when the screen is narrower than the table."""
    head = "".join(f"<th>{_text(h)}</th>" for h in headers)
    body = "".join(f"<tr>{_cells(r)}</tr>" for r in rows)
    foot = f'<tfoot><tr class="total">{_cells(total)}</tr></tfoot>' if total else ""
    return (
        f'<div class="table-wrap"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody>{foot}</table></div>"
    )


_CSS = """
:root{--fg:#1c2430;--muted:#5f6975;--line:#e3e7ec;--bg:#fff;--card:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:28px 32px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:17px;margin:0 0 4px}
.meta{margin:0;overflow-wrap:anywhere}.muted{color:var(--muted)}
p.note{margin:0 0 12px;font-size:13px}
section{margin-top:28px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(128px,1fr));gap:10px;
margin-top:18px}
.kpi{background:var(--card);border-radius:8px;padding:10px 14px}
.kpi b{display:block;font-size:24px;font-variant-numeric:tabular-nums}
.kpi span{color:var(--muted);font-size:13px}
.grid2{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:0 40px;
align-items:start}
.chart{font-size:13px;color:var(--muted)}
.chart.empty p{margin:8px 0}
.cols{display:grid;grid-template-columns:max-content minmax(0,1fr);
grid-template-rows:220px auto;column-gap:8px;padding-top:10px}
.cols .yaxis{position:relative}
.cols .tick{position:absolute;right:0;transform:translateY(50%);line-height:1;
font-variant-numeric:tabular-nums}
.cols .plot{position:relative;display:flex;align-items:stretch;gap:2px;
border-bottom:1px solid #c5ccd4}
.cols .gridline{position:absolute;left:0;right:0;border-top:1px solid var(--line)}
.cols .col{position:relative;flex:1 1 0;min-width:0;max-width:96px;margin:0 auto;
display:flex;flex-direction:column-reverse}
.cols .seg{display:block;width:72%;margin:0 auto;min-height:1px}
.cols .xaxis{grid-column:2;display:flex;gap:2px;padding-top:8px}
.cols .xl{flex-basis:0;min-width:0;text-align:center;white-space:nowrap;line-height:1.25}
.bars{display:grid;gap:6px;padding-top:6px}
.bar-row{display:grid;grid-template-columns:minmax(5em,10em) minmax(0,1fr) max-content;
gap:10px;align-items:center}
.bar-label{color:var(--fg);overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
text-align:right}
.track{height:22px;display:flex}.bar{display:block;height:100%;border-radius:3px;min-width:2px}
.bar-value{color:var(--fg);font-variant-numeric:tabular-nums;white-space:nowrap}
.share{color:var(--muted)}
.legend{list-style:none;padding:0;margin:10px 0 0;display:flex;flex-wrap:wrap;gap:6px 16px;
font-size:13px}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px}
.table-wrap{overflow-x:auto;margin-top:8px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:var(--card);font-weight:600;vertical-align:bottom}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
#table-days td{white-space:nowrap}
#table-days td:first-child,#table-days th:first-child{position:sticky;left:0;
background:var(--bg)}
#table-days th:first-child{background:var(--card)}
#table-failed td:nth-child(-n+2){white-space:nowrap}
#table-failed td:nth-child(n+4){min-width:14em;overflow-wrap:anywhere}
tr.total td{font-weight:600}
@media (max-width:820px){
main{padding:18px 14px}.grid2{grid-template-columns:minmax(0,1fr)}
.cols{grid-template-rows:180px auto}.bar-row{grid-template-columns:minmax(4em,8em)
minmax(0,1fr) max-content}}
@media print{main{padding:0}}
"""


def render_report(data: ReportData) -> str:
    """The page: headline figures, the charts, then every number in tables."""
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
        f'<div class="kpi" data-kpi="{_text(name)}"><b>{_text(value)}</b>'
        f"<span>{_text(name)}</span></div>"
        for name, value in kpis
    )
    outcomes = _columns_chart(
        "chart-outcomes",
        "Conversations per date by status",
        dates,
        [(s, c, [getattr(d.counts, s) for d in days]) for s, c in STATUS_COLORS.items()],
    )
    sentiment = data.sentiment
    analysed = sum(sentiment.values())
    sentiment_chart = _bars_chart(
        "chart-sentiment",
        "Sentiment of analysed conversations",
        [(name, sentiment.get(name, 0), color) for name, color in SENTIMENT_COLORS.items()],
        shares=True,
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
    failed_rows = [
        [f.date, f.id, f.attempts, f.error_shown, f.first_words]
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
        '<section><h2>Documents not included</h2>'
        + _table(
            "table-problems", ["document", "reason"], [[p.key, p.reason] for p in data.problems]
        )
        + "</section>"
        if data.problems
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>convsync report {_text(first)} – {_text(last)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>convsync report</h1>
<p class="meta muted">Dates {_text(first)} to {_text(last)} · store {_text(data.store_url)} ·
generated {_text(data.generated_at)}</p>
<div class="kpis">{kpi_html}</div>
<section>
<h2>Outcomes over time</h2>
<p class="note muted">Conversations per date by status</p>
{outcomes}
{_legend(STATUS_COLORS)}
</section>
<div class="grid2">
<div>
<section>
<h2>Sentiment mix</h2>
<p class="note muted">{analysed} analysed conversation{"" if analysed == 1 else "s"}</p>
{sentiment_chart}
</section>
<section>
<h2>Escalations</h2>
<p class="note muted">Conversations whose analysis says escalation is needed, per date</p>
{escalations_chart}
</section>
</div>
<section>
<h2>Top topics</h2>
<p class="note muted">Conversations mentioning each topic (the {TOP_TOPICS} most frequent)</p>
{topics_chart}
</section>
</div>
<section>
<h2>Per date</h2>
{day_table}
</section>
<section>
<h2>Failed conversations ({len(data.failed)})</h2>
{failed_table}
</section>
{problems}
</main>
</body>
</html>
"""
