"""The Dagster side: the `dead_letters` view and the `convsync_migrate` job."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, Definitions, materialize

from convsync_pipeline.assets.operations import (
    MIGRATE_JOB_NAME,
    build_operations_definitions,
)
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.resources.blob_lock import BlobLockResource
from convsync_pipeline.resources.blob_store import BlobStoreResource
from convsync_pipeline.settings import load_settings
from convsync_pipeline.store.local import LocalStore
from tests.operations.builders import (
    conversation,
    document,
    legacy_conversation,
    legacy_document,
    put,
    snapshot,
)


def folder_resources(root: str, **lock: float) -> dict:
    store = BlobStoreResource(url=root)
    return {"blob_store": store, "blob_lock": BlobLockResource(blob_store=store, **lock)}


@pytest.fixture
def definitions() -> dict:
    return build_operations_definitions(load_settings({}))


def test_dead_letters_lists_failed_conversations_across_dates(
    tmp_path: Path, definitions: dict
) -> None:
    put(
        tmp_path,
        "2026-02-11",
        document(
            "2026-02-11",
            [
                conversation("f1", "failed", retry=3, error="schema violation"),
                conversation("ok", "success"),
            ],
        ),
    )
    put(
        tmp_path,
        "2026-02-12",
        document("2026-02-12", [conversation("f2", "failed", "2026-02-12", retry=3, error="x")]),
    )
    put(tmp_path, "2026-02-13", legacy_document("2026-02-13", [legacy_conversation("old")]))

    result = materialize(
        definitions["assets"], resources={"blob_store": BlobStoreResource(url=str(tmp_path))}
    )

    assert result.success
    (event,) = result.asset_materializations_for_node("dead_letters")
    metadata = {key: value.value for key, value in event.metadata.items()}
    assert metadata["failed"] == 2
    assert metadata["dates_with_failed"] == 2
    assert metadata["dates_checked"] == 3
    assert metadata["unreadable_documents"] == 1
    table = metadata["dead_letters"]
    assert "| 2026-02-11 | f1 | 3 | schema violation |" in table
    assert "| 2026-02-12 | f2 | 3 | x |" in table
    assert "ok" not in table
    assert "conversations/2026-02-13.json" in metadata["unreadable"]


def test_dead_letters_sits_outside_the_daily_group(definitions: dict) -> None:
    (asset,) = definitions["assets"]
    assert asset.key == AssetKey("dead_letters")
    assert asset.partitions_def is None
    assert asset.group_names_by_key[asset.key] != "convsync"
    Definitions.validate_loadable(
        Definitions(
            assets=definitions["assets"],
            jobs=definitions["jobs"],
            resources=folder_resources("unused"),
        )
    )


def test_migrate_job_dry_run_then_for_real(tmp_path: Path, definitions: dict) -> None:
    put(
        tmp_path,
        "2026-02-11",
        legacy_document(
            "2026-02-11",
            [
                legacy_conversation("a", processed_at="2026-02-11T12:00:00.000Z"),
                legacy_conversation("b"),
            ],
        ),
    )
    (job,) = definitions["jobs"]
    assert job.name == MIGRATE_JOB_NAME
    resources = folder_resources(str(tmp_path), wait_seconds=0)
    before = snapshot(tmp_path)

    def run(dry_run: bool):
        config = {"ops": {"migrate_date_documents": {"config": {"dry_run": dry_run}}}}
        return job.execute_in_process(run_config=config, resources=resources)

    dry = run(True)
    assert dry.output_for_node("migrate_date_documents")["would_migrate"] == 1
    assert snapshot(tmp_path) == before

    real = run(False)
    assert real.output_for_node("migrate_date_documents")["migrated"] == 1
    migrated = load_document(LocalStore(tmp_path), "2026-02-11").document
    assert [c.processing_status for c in migrated.conversations] == ["success", "pending"]
    assert migrated.version == 1


def test_migrate_job_fails_naming_the_documents_it_skipped(
    tmp_path: Path, definitions: dict
) -> None:
    put(tmp_path, "2026-02-11", b"{")
    (job,) = definitions["jobs"]

    result = job.execute_in_process(resources=folder_resources(str(tmp_path)), raise_on_error=False)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "conversations/2026-02-11.json" in failure.event_specific_data.error.message
