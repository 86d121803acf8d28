"""What the UI shows for a partition: the date's state on every materialisation, checks that
say what they check, and values a person can read (no Python reprs)."""

from __future__ import annotations

import re

from dagster import AssetKey, JsonMetadataValue, MarkdownMetadataValue

from convsync_pipeline.assets.markdown import plain, table
from convsync_pipeline.definitions import build_definitions
from convsync_pipeline.store.local import LocalStore
from tests.dagster.helpers import csv_upload, run_date, settings_for

D = "2026-02-11"
UPLOAD = csv_upload(
    ("c-1", "2026-02-11T09:00:00Z", "user", "The app keeps crashing when I upload photos"),
    ("c-2", "2026-02-11T10:15:00Z", "user", "the new dashboard is great!"),
    ("c-3", "2026-02-11T11:00:00Z", "user", "I need to talk to a manager"),
)
REPR = re.compile(r"[{}\[\]]|'\w+':|Counter\(|TopicCount\(")


def metadata_of(result, node: str) -> dict:
    (materialization,) = result.asset_materializations_for_node(node)
    return materialization.metadata


def test_a_rerun_with_nothing_to_do_still_shows_the_dates_totals(tmp_path) -> None:
    store = LocalStore(tmp_path)
    settings = settings_for({"CONVSYNC_STORE": str(tmp_path)})
    store.write(f"incoming/{D}/export.csv", UPLOAD)
    assert run_date(settings, D).success

    again = run_date(settings, D)

    assert again.success
    analysis = {k: v.value for k, v in metadata_of(again, "ai_analysis").items()}
    assert analysis["selected"] == 0 and analysis["succeeded"] == 0, "the run did nothing"
    assert {k: analysis[k] for k in ("total", "success", "failed", "pending", "processing")} == {
        "total": 3,
        "success": 3,
        "failed": 0,
        "pending": 0,
        "processing": 0,
    }
    summary = metadata_of(again, "daily_summary")
    assert {k: summary[k].value for k in ("total", "success", "pending", "processing")} == {
        "total": 3,
        "success": 3,
        "pending": 0,
        "processing": 0,
    }
    assert isinstance(summary["sentiment"], JsonMetadataValue)
    assert sum(summary["sentiment"].value.values()) == 3
    table_text = summary["summary"]
    assert isinstance(table_text, MarkdownMetadataValue)
    assert not REPR.search(table_text.value), table_text.value
    mix = r"\| sentiment \| positive \d+, neutral \d+, negative \d+ \|"
    assert re.search(mix, table_text.value)


def test_every_asset_check_says_what_it_checks(tmp_path) -> None:
    defs = build_definitions(settings_for({"CONVSYNC_STORE": str(tmp_path)}))
    graph = defs.resolve_asset_graph()
    specs = [
        spec
        for key in (AssetKey("ai_analysis"), AssetKey("daily_summary"))
        for spec in graph.get(key).assets_def.check_specs
    ]
    assert len(specs) == 6
    for spec in specs:
        assert spec.description and len(spec.description) > 30, spec.name


def test_tables_render_mappings_and_lists_for_people() -> None:
    assert plain({"positive": 2, "negative": 1}) == "positive 2, negative 1"
    assert plain(["a", "b"]) == "a, b"
    assert plain(None) == "-"
    assert plain(0.333333) == "0.3333"
    text = table(["k", "v"], [["sentiment", {"neutral": 1}], ["ids", ["x", "y"]]])
    assert "| sentiment | neutral 1 |" in text and "| ids | x, y |" in text
    assert not REPR.search(text.split("\n", 2)[2])
