"""The four assets through `dagster.materialize`, on the folder store and on S3 (moto)."""

from __future__ import annotations

import json

import pytest

from convsync_pipeline.core.keys import document_key, summary_key
from tests.dagster.helpers import csv_upload, run_date, settings_for

D = "2026-02-11"
NEXT = "2026-02-12"

FIRST_UPLOAD = csv_upload(
    ("c-1", "2026-02-11T09:00:00Z", "user", "The app keeps crashing when I upload photos"),
    ("c-1", "2026-02-11T09:02:00Z", "agent", "Sorry! We are fixing it."),
    ("c-2", "2026-02-11 10:15", "user", "the new dashboard is great!"),
    ("late", "2026-02-12T00:05:00Z", "agent", "Anything else?"),
    ("late", "2026-02-11T23:58:00Z", "user", "I need to talk to a manager"),
    ("", "2026-02-11T11:00:00Z", "user", "a record without an id"),
    ("c-3", "yesterday-ish", "user", "an unparseable time"),
)


def document(store, date=D) -> dict:
    return json.loads(store.read(document_key(date)))


@pytest.fixture
def pipeline(store_factory):
    store = store_factory()
    settings = settings_for(store_factory.env(store))
    return store, settings


def test_one_date_end_to_end(pipeline):
    store, settings = pipeline
    store.write("incoming/2026-02-11/export.csv", FIRST_UPLOAD)
    result = run_date(settings, D)
    assert result.success

    doc = document(store)
    ids = [c["id"] for c in doc["conversations"]]
    assert ids == ["c-1", "c-2", "late"]
    assert all(c["processingStatus"] == "success" for c in doc["conversations"])
    assert all(c["analysis"]["analyzer"] == "local" for c in doc["conversations"])
    assert doc["processedCount"] == 3
    assert doc["summary"] == {"total": 3, "pending": 0, "processing": 0, "success": 3, "failed": 0}
    late = doc["conversations"][2]
    assert late["startedAt"] == "2026-02-11T23:58:00.000Z"
    assert late["endedAt"] == "2026-02-12T00:05:00.000Z"
    assert late["source"] == "incoming/2026-02-11/export.csv"

    summary = json.loads(store.read(summary_key(D)))
    assert summary["documentVersion"] == doc["_blobMeta"]["version"]
    assert summary["processedCount"] == 3

    quarantined = [
        json.loads(line)
        for info in store.list("quarantine/")
        for line in store.read(info.key).decode().splitlines()
    ]
    assert sorted(q["row"] for q in quarantined) == [6, 7]
    assert all(q["upload"] == "incoming/2026-02-11/export.csv" for q in quarantined)

    checks = result.get_asset_check_evaluations()
    assert {c.check_name: c.passed for c in checks} == {
        "ids_unique": True,
        "processed_count_matches": True,
        "nothing_left_processing": True,
        "no_failed": True,

        "single_analysis_version": True,
        "summary_matches_document": True,
    }


def test_rerunning_a_date_changes_nothing_and_analyses_nothing_again(pipeline):
    store, settings = pipeline
    store.write("incoming/2026-02-11/export.csv", FIRST_UPLOAD)
    assert run_date(settings, D).success
    before = store.read(document_key(D))
    quarantine_before = {info.key: store.read(info.key) for info in store.list("quarantine/")}

    again = run_date(settings, D)
    assert again.success
    assert store.read(document_key(D)) == before, "not even the version changes"
    assert {i.key: store.read(i.key) for i in store.list("quarantine/")} == quarantine_before
    analysis = again.asset_materializations_for_node("ai_analysis")[0].metadata
    assert analysis["selected"].value == 0


def test_midnight_straddler_belongs_to_its_first_day_only(pipeline):
    store, settings = pipeline
    store.write("incoming/2026-02-11/export.csv", FIRST_UPLOAD)
    assert run_date(settings, NEXT).success  # the run of the next day ingests the upload too
    assert [c["id"] for c in document(store, NEXT)["conversations"]] == []
    assert run_date(settings, D).success
    assert "late" in [c["id"] for c in document(store)["conversations"]]


def test_later_upload_appends_only_new_ids_and_never_touches_existing(pipeline):
    store, settings = pipeline
    store.write("incoming/2026-02-11/export.csv", FIRST_UPLOAD)
    assert run_date(settings, D).success
    first = {c["id"]: c for c in document(store)["conversations"]}
    store.write(
        "incoming/2026-02-11/reexport.csv",
        csv_upload(
            ("c-1", "2026-02-11T08:00:00Z", "user", "an earlier, different first message"),
            ("c-9", "2026-02-11T12:00:00Z", "user", "please cancel my subscription"),
        ),
    )
    result = run_date(settings, D)
    assert result.success
    merged = result.asset_materializations_for_node("normalized_conversations")[0].metadata
    assert (merged["new_conversations"].value, merged["already_present"].value) == (1, 1)
    after = {c["id"]: c for c in document(store)["conversations"]}
    assert list(after) == ["c-1", "c-2", "late", "c-9"]
    for cid, conversation in first.items():
        assert after[cid] == conversation
    assert after["c-9"]["processingStatus"] == "success"


def test_a_date_without_uploads_gets_an_empty_document_and_summary(pipeline):
    store, settings = pipeline
    assert run_date(settings, "2026-02-01").success
    doc = document(store, "2026-02-01")
    assert doc["conversations"] == [] and doc["processedCount"] == 0
    assert doc["_blobMeta"]["version"] == 1
    summary = json.loads(store.read(summary_key("2026-02-01")))
    assert summary["summary"]["total"] == 0 and summary["documentVersion"] == 1


def test_each_upload_is_parsed_once_however_many_dates_it_touches(pipeline):
    store, settings = pipeline
    store.write("incoming/multi.csv", FIRST_UPLOAD)
    first = run_date(settings, D)
    second = run_date(settings, NEXT)
    raw_first = first.asset_materializations_for_node("raw_conversations")[0].metadata
    raw_second = second.asset_materializations_for_node("raw_conversations")[0].metadata
    assert raw_first["uploads_ingested"].value == 1
    assert raw_first["records_in"].value == 7
    assert raw_first["records_accepted"].value + raw_first["records_quarantined"].value == 7
    assert raw_second["uploads_ingested"].value == 0
