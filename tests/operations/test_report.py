"""`convsync report`: one offline HTML page whose charts and tables match the documents."""

from __future__ import annotations

from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

from tests.operations.builders import analysis, conversation, document, legacy_document, put

CHARTS = {"chart-outcomes", "chart-sentiment", "chart-topics", "chart-escalations"}


class Page(HTMLParser):
    """Charts (chart id -> data-* of its marks) and tables (id -> rows of cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.charts: dict[str, list[dict[str, str]]] = {}
        self.tables: dict[str, list[list[str]]] = defaultdict(list)
        self.kpis: dict[str, str] = {}
        self.external: list[tuple[str, str]] = []
        self._chart: str | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._kpi: str | None = None
        self._kpi_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        for name in ("src", "href"):
            if name in a:
                self.external.append((tag, a[name]))
        if "chart" in a.get("class", "").split():
            self._chart = a.get("id", "?")
            self.charts[self._chart] = []
        elif self._chart and "data-value" in a:
            self.charts[self._chart].append(a)
        elif tag == "table":
            self._table = a["id"]
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in {"td", "th"} and self._table:
            self._cell = []
        elif tag == "div" and "data-kpi" in a:
            self._kpi, self._kpi_text = a["data-kpi"], []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in {"td", "th"} and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "b" and self._kpi:
            self.kpis[self._kpi] = "".join(self._kpi_text)
            self._kpi = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._kpi:
            self._kpi_text.append(data)

    def series(self, chart: str) -> dict[tuple[str, str], float]:
        return {
            (r["data-label"], r["data-series"]): float(r["data-value"]) for r in self.charts[chart]
        }


def seed(root: Path) -> None:
    put(
        root,
        "2026-02-10",
        document(
            "2026-02-10",
            [
                conversation(
                    "a1", "success", "2026-02-10", result=analysis("positive", ("Billing",))
                ),
                conversation("a2", "failed", "2026-02-10", retry=3, error="refusal"),
            ],
        ),
    )
    put(
        root,
        "2026-02-11",
        document(
            "2026-02-11",
            [
                conversation(
                    "b1",
                    "success",
                    "2026-02-11",
                    result=analysis("negative", ("billing", "refund"), escalation=True, score=-0.8),
                ),
                conversation(
                    "b2",
                    "success",
                    "2026-02-11",
                    result=analysis(
                        "negative", ("<script>alert(1)</script>",), escalation=True, score=-0.4
                    ),
                ),
                conversation(
                    "b3", "success", "2026-02-11", result=analysis("neutral", ("refund",))
                ),
                conversation("b4", "pending", "2026-02-11"),
                conversation("b5", "processing", "2026-02-11"),
            ],
            version=6,
        ),
    )
    put(root, "2026-02-12", document("2026-02-12", [conversation("c1", "pending", "2026-02-12")]))


def run_report(cli, tmp_path: Path, *argv: str) -> tuple[Page, str, str]:
    out = tmp_path / "report.html"
    result = cli("report", "--out", str(out), *argv)
    assert result.code == 0, result.err
    html = out.read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    return page, html, result.out


def test_report_charts_and_tables_match_the_documents(root: Path, cli, tmp_path: Path) -> None:
    seed(root)

    page, html, out = run_report(cli, tmp_path)

    assert "3 date(s), 8 conversations, 1 failed" in out
    assert set(page.charts) == CHARTS
    outcomes = page.series("chart-outcomes")
    assert outcomes == {
        ("2026-02-10", "success"): 1,
        ("2026-02-10", "failed"): 1,
        ("2026-02-11", "success"): 3,
        ("2026-02-11", "pending"): 1,
        ("2026-02-11", "processing"): 1,
        ("2026-02-12", "pending"): 1,
    }
    assert page.series("chart-sentiment") == {
        ("positive", "positive"): 1,
        ("neutral", "neutral"): 1,
        ("negative", "negative"): 2,
    }
    topics = page.series("chart-topics")
    assert topics[("billing", "billing")] == 2, "topics are counted case-insensitively"
    assert topics[("refund", "refund")] == 2
    assert topics[("<script>alert(1)</script>", "<script>alert(1)</script>")] == 1
    assert page.series("chart-escalations") == {("2026-02-11", "escalations"): 2}

    days = page.tables["table-days"]
    assert days[0][:6] == ["date", "conversations", "success", "failed", "pending", "processing"]
    assert days[1][:7] == ["2026-02-10", "2", "1", "1", "0", "0", "50.0%"]
    assert days[2][:10] == ["2026-02-11", "5", "3", "0", "1", "1", "60.0%", "3", "2", "-0.40"]
    assert days[2][-1] == "6"
    assert days[-1][:6] == ["total", "8", "4", "1", "2", "1"]
    assert page.tables["table-failed"][1][:4] == ["2026-02-10", "a2", "3", "refusal"]
    assert page.kpis["conversations"] == "8" and page.kpis["escalations"] == "2"

    assert "script" not in page.tags, "model output is escaped, never markup"
    assert "&lt;script&gt;" in html
    assert page.external == [], "nothing to fetch: the page works offline"
    for marker in ("<link", "url(", "@import", "http://", "https://"):
        assert marker not in html


def test_report_range_and_documents_left_out(root: Path, cli, tmp_path: Path) -> None:
    seed(root)
    put(root, "2026-02-13", legacy_document("2026-02-13", [{"id": "x", "processedAt": ""}]))

    page, _, out = run_report(cli, tmp_path, "--from", "2026-02-11", "--to", "2026-02-13")

    assert "2 date(s), 6 conversations, 0 failed" in out
    assert {label for label, _ in page.series("chart-outcomes")} == {"2026-02-11", "2026-02-12"}
    assert page.tables["table-problems"][1][0] == "conversations/2026-02-13.json"


def test_an_empty_range_still_renders_every_chart(root: Path, cli, tmp_path: Path) -> None:
    page, html, out = run_report(cli, tmp_path)

    assert "0 date(s)" in out
    assert set(page.charts) == CHARTS
    assert html.count("no data in this range") == 4
