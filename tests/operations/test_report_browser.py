"""The report in a real browser (headless Chromium), at a wide screen and a phone's width:
nothing overflows its container, every chart's labels are at least 11 px, and the numbers the
page shows are the store's."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.browser import browser  # noqa: F401
from tests.operations.builders import analysis, conversation, document, put

pytestmark = pytest.mark.slow

WIDTHS = {"wide": 1400, "tablet": 900, "phone": 390}
DATES = [f"2026-01-{day:02d}" for day in range(1, 32)] + [
    f"2026-02-{day:02d}" for day in range(1, 11)
]
TOPICS = [
    "billing",
    "refund",
    "login",
    "shipping",
    "a very long topic name that a model made up about invoices",
    "<b>markup</b>",
    "bug",
    "pricing",
    "export",
    "dashboard",
    "api",
    "cancellation",
    "onboarding",
    "mobile",
]
SENTIMENTS = ["positive", "neutral", "negative", "negative"]

# What the page must never do: a box sticking out of the box that holds it (charts are checked
# against their chart, tables scroll inside their wrapper), or text spilling out of its box.
OVERFLOWS = """
() => {
  const out = [];
  const main = document.querySelector('main');
  const describe = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : '');
  for (const el of main.querySelectorAll('*')) {
    if (el.closest('.table-wrap') && !el.classList.contains('table-wrap')) continue;
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 && rect.height === 0) continue;
    const box = el.parentElement.closest('.chart') || el.parentElement;
    const outer = box.getBoundingClientRect();
    if (rect.left < outer.left - 1 || rect.right > outer.right + 1 ||
        rect.top < outer.top - 1 || rect.bottom > outer.bottom + 1) {
      out.push(`${describe(el)} "${el.textContent.slice(0, 30)}" leaves ${describe(box)}`);
    }
    const style = getComputedStyle(el);
    if (style.overflowX === 'visible' && el.scrollWidth > el.clientWidth + 1 &&
        style.display !== 'inline') {
      out.push(`${describe(el)} "${el.textContent.slice(0, 30)}": its content spills out`);
    }
  }
  return out;
}
"""

LABELS = """
() => [...document.querySelectorAll('.chart')].map((chart) => {
  const labels = [];
  for (const el of chart.querySelectorAll('*')) {
    const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.data).join('');
    if (!text.trim()) continue;
    const svg = el.closest('svg');
    const scale = svg && svg.viewBox.baseVal.width
      ? svg.getBoundingClientRect().width / svg.viewBox.baseVal.width : 1;
    const r = el.getBoundingClientRect();
    labels.push({text: text.trim(), px: parseFloat(getComputedStyle(el).fontSize) * scale,
                 left: r.left, right: r.right, top: r.top, bottom: r.bottom,
                 cls: el.className});
  }
  return {id: chart.id, empty: chart.classList.contains('empty'), labels};
})
"""

VISIBLE = """
() => ({
  kpis: Object.fromEntries([...document.querySelectorAll('[data-kpi]')].map(
    (k) => [k.dataset.kpi, k.querySelector('b').innerText])),
  days: [...document.querySelectorAll('#table-days tr')].map(
    (tr) => [...tr.children].map((td) => td.innerText.trim())),
  bars: Object.fromEntries([...document.querySelectorAll('.chart.bars')].map((chart) => [
    chart.id, [...chart.querySelectorAll('.bar-row')].map((row) => [
      row.querySelector('.bar-label').getAttribute('title'),
      row.querySelector('.bar-value').innerText.split(' ')[0],
      row.querySelector('.bar').dataset.value])])),
  segments: [...document.querySelectorAll('#chart-outcomes [data-value]')].map(
    (s) => [s.dataset.label, s.dataset.series, s.dataset.value]),
  dateLines: [...document.querySelectorAll('#table-days tbody td:first-child')].map((td) => {
    const range = document.createRange(); range.selectNodeContents(td);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
  }),
  scrolls: [...document.querySelectorAll('.table-wrap')].map(
    (w) => [w.firstElementChild.id, w.scrollWidth > w.clientWidth + 1]),
  pageScroll: document.documentElement.scrollWidth - window.innerWidth,
})
"""


def seed(root: Path) -> None:
    """41 dates of mixed outcomes, with long and hostile topic names and a long error."""
    for n, date in enumerate(DATES):
        conversations = []
        for k in range(5 + n % 9):
            cid = f"{date}-{k}"
            if k % 11 == 3:
                conversations.append(
                    conversation(
                        cid,
                        "failed",
                        date,
                        retry=3,
                        error="the model refused: " + "very long explanation " * 8,
                    )
                )
            elif (k + n) % 13 == 5:
                conversations.append(conversation(cid, "pending", date))
            else:
                topics = (TOPICS[(n + k) % len(TOPICS)], TOPICS[(n * 3 + k) % len(TOPICS)])
                result = analysis(
                    SENTIMENTS[(n + k) % 4], topics, escalation=(n + k) % 5 == 0, score=-0.2
                )
                conversations.append(conversation(cid, "success", date, result=result))
        put(root, date, document(date, conversations, version=2 + n % 3))


def store_numbers(root: Path) -> dict[str, Any]:
    """The figures, read straight from the documents (not through the report's code)."""
    per_date, sentiment, topics, escalations = {}, Counter(), Counter(), 0
    for path in sorted((root / "conversations").glob("*.json")):
        body = json.loads(path.read_bytes())
        statuses = Counter(c["processingStatus"] for c in body["conversations"])
        per_date[body["date"]] = statuses
        for c in body["conversations"]:
            if c["processingStatus"] == "success":
                sentiment[c["analysis"]["sentiment"]] += 1
                topics.update({t.lower() for t in c["analysis"]["topics"]})
                escalations += c["analysis"]["escalationNeeded"]
    return {
        "per_date": per_date,
        "sentiment": sentiment,
        "topics": topics,
        "escalations": escalations,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from convsync_pipeline.cli import main

    folder = tmp_path_factory.mktemp("report")
    root = folder / "store"
    seed(root)
    out = folder / "report.html"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVSYNC_STORE", str(root))
        assert main(["report", "--out", str(out)]) == 0
    return out, store_numbers(root)


@pytest.mark.parametrize("width", list(WIDTHS.values()), ids=list(WIDTHS))
def test_the_report_reads_well_in_chromium(browser, report, width: int) -> None:  # noqa: F811
    out, numbers = report
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(out.as_uri())

    assert page.evaluate(OVERFLOWS) == []
    seen = page.evaluate(VISIBLE)
    assert seen["pageScroll"] <= 0, "the page itself never scrolls sideways"
    scrolling = [table for table, scrolls in seen["scrolls"] if scrolls]
    if width >= 1400:
        assert scrolling == [], "on a wide screen every table fits"
    else:
        assert set(scrolling) <= {"table-days", "table-failed"}
    assert set(seen["dateLines"]) == {1}, "a date never wraps"

    charts = page.evaluate(LABELS)
    assert {c["id"] for c in charts} == {
        "chart-outcomes",
        "chart-sentiment",
        "chart-topics",
        "chart-escalations",
    }
    for chart in charts:
        assert not chart["empty"] and len(chart["labels"]) >= 3, chart["id"]
        small = [(label["text"], round(label["px"], 1)) for label in chart["labels"]
                 if label["px"] < 11]
        assert small == [], f"{chart['id']}: labels under 11 px"
        x_labels = sorted(
            (label for label in chart["labels"] if label["cls"] == "xl"),
            key=lambda label: label["left"],
        )
        for a, b in itertools.pairwise(x_labels):
            assert a["right"] <= b["left"], f"{chart['id']}: {a['text']} overlaps {b['text']}"

    # The numbers shown are the store's.
    per_date = numbers["per_date"]
    total = Counter()
    for counts in per_date.values():
        total.update(counts)
    assert seen["kpis"]["dates"] == str(len(per_date))
    assert seen["kpis"]["conversations"] == str(total.total())
    for status in ("success", "failed", "pending", "processing"):
        assert seen["kpis"][status] == str(total[status]), status
    assert seen["kpis"]["escalations"] == str(numbers["escalations"])
    rows = {row[0]: row for row in seen["days"][1:-1]}
    assert list(rows) == sorted(per_date)
    for date, counts in per_date.items():
        shown = rows[date]
        assert shown[1:6] == [
            str(counts.total()),
            str(counts["success"]),
            str(counts["failed"]),
            str(counts["pending"]),
            str(counts["processing"]),
        ], date
    assert seen["days"][-1][:3] == ["total", str(total.total()), str(total["success"])]
    segments = Counter()
    for date, status, value in seen["segments"]:
        segments[(date, status)] += int(value)
    assert segments == Counter(
        {(d, s): n for d, counts in per_date.items() for s, n in counts.items()}
    )
    sentiment = {name: int(shown) for name, shown, _ in seen["bars"]["chart-sentiment"]}
    assert sentiment == dict(numbers["sentiment"])
    topics = seen["bars"]["chart-topics"]
    assert len(topics) == 12
    for name, shown, value in topics:
        assert int(shown) == int(value) == numbers["topics"][name], name
    assert [int(v) for _, v, _ in topics] == sorted(numbers["topics"].values(), reverse=True)[:12]
    page.close()
