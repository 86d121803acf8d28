"""Shared machinery of the reliability suite: real `dagster` CLI runs, a gated model server,
store inspection and the summary line every scenario prints.

Every scenario drives the pipeline the way an operator does: `dagster asset materialize -m
convsync_pipeline.definitions ...` in its own process (own session, own DAGSTER_HOME), an
OpenAI-compatible HTTP server (`FakeOpenAIServer`) that counts what each conversation was
really sent, and a folder store or moto_server S3 store. The assertions are made on what the
server received and on the stored documents, never on the pipeline's own report of itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convsync_pipeline.core.document import DateDocument
from convsync_pipeline.core.keys import document_key, lock_key, summary_key
from convsync_pipeline.pipeline.documents import load_document
from convsync_pipeline.store.base import Store
from tests.fixtures.openai_server import FakeOpenAIServer, FakeRequest, Reply

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).with_name("dagster")
MODULE = "convsync_pipeline.definitions"
START_DATE = "2026-01-01"
API_KEY = "sk-reliability-test-0000"
HOOK_DIR = Path(__file__).resolve().parent / "crashhook"

# The pipeline's own logger goes through Dagster's log manager, so `[Blob] wrote` and
# `[Lock] ...` lines land in each CLI run's output next to the step events.
INSTANCE_EXTRA = """
# reliability suite: show convsync's own log lines ([Blob] wrote, [Lock] ...) in run output
python_logs:
  managed_python_loggers: [convsync]
  python_log_level: DEBUG
"""

BLOB_WROTE = re.compile(r"\[Blob\] wrote (\S+) at version (\d+)")
ANALYSED = re.compile(
    r"(\d{4}-\d{2}-\d{2}): (\d+) analysed, (\d+) failed attempts, (\d+) now failed, "
    r"(\d+) still due, (\d+) interrupted recovered"
)
_STEP_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) .* - (?:\d+ - )?(?P<step>[a-z_]+) - "
    r"(?P<event>STEP_START|\[Lock\] Took over)"
)
LOCK_FAILED = "[Lock] Failed to acquire lock"
LOCKED_BY = "is locked by"


# ---------------------------------------------------------------------------- instances


class Homes:
    """DAGSTER_HOMEs for CLI runs: each a copy of one template holding the repository's
    dagster.yaml (plus log capture) with its SQLite storage already created.

    They live on /dev/shm when there is one: a run's instance storage is not under test, and
    SQLite's fsyncs on a shared disk add a second or two to every CLI run.
    """

    def __init__(self) -> None:
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.root = Path(tempfile.mkdtemp(prefix="convsync-reliability-", dir=base))
        self.template = self.root / "template"
        self.template.mkdir()
        text = (ROOT / "dagster.yaml").read_text(encoding="utf-8")
        (self.template / "dagster.yaml").write_text(text + INSTANCE_EXTRA, encoding="utf-8")
        from dagster import DagsterInstance

        instance = DagsterInstance.from_config(str(self.template))
        try:
            instance.get_runs(limit=1)
        finally:
            instance.dispose()
        self._count = 0

    def new(self, name: str = "home") -> Path:
        self._count += 1
        return Path(shutil.copytree(self.template, self.root / f"{name}-{self._count}"))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------- CLI runs


def cli_env(
    store_env: dict[str, str],
    home: Path,
    server: FakeOpenAIServer | None = None,
    **extra: str,
) -> dict[str, str]:
    """The environment of one CLI run: nothing inherited from CONVSYNC_/OPENAI_/DAGSTER_."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CONVSYNC_", "OPENAI_", "DAGSTER_", "PYTEST_"))
    }
    env.update(store_env)
    env["CONVSYNC_START_DATE"] = START_DATE
    env["DAGSTER_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    if server is not None:
        env.update(
            CONVSYNC_ANALYZER="openai",
            OPENAI_API_KEY=API_KEY,
            OPENAI_BASE_URL=server.base_url,
            # Far above any hold of the gate: an SDK retry after a client timeout would be
            # a second request for the same conversation, and this suite counts requests.
            CONVSYNC_REQUEST_TIMEOUT_SECONDS="300",
        )
    env.update(extra)
    return env


@dataclass
class CliRun:
    """One `dagster asset materialize` process, in its own session, output in a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float
    killed: bool = False
    home: Path | None = None  # its DAGSTER_HOME

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} did not finish in {timeout}s:\n{self.output()[-4000:]}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the run's own process group (started with start_new_session)."""
        if self.process.poll() is None:
            self.killed = True
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    # -- what the output says ------------------------------------------------------------

    def blob_writes(self, key: str | None = None) -> list[int]:
        return [
            int(version)
            for written, version in BLOB_WROTE.findall(self.output())
            if key is None or written == key
        ]

    def analysed(self) -> int:
        """Conversations this run reported as analysed (summed over step retries)."""
        return sum(int(match[1]) for match in ANALYSED.findall(self.output()))

    def lost_lock_race(self) -> bool:
        text = self.output()
        if LOCKED_BY not in text:
            return False
        return LOCK_FAILED in text or any(LOCK_FAILED in m for m in self.event_log_messages())

    def event_log_messages(self) -> list[str]:
        """What every run of this process's DAGSTER_HOME logged, from the instance's event log.

        The CLI's console copy of a step's events can lose lines when a process that failed
        fast exits on a loaded machine (seen once in CI: the step's warning and STEP_FAILURE
        missing, RUN_FAILURE printed); the event log is the record itself.
        """
        if self.home is None:
            return []
        from dagster import DagsterInstance

        with DagsterInstance.from_config(str(self.home)) as instance:
            return [
                event.user_message
                for run in instance.get_runs()
                for event in instance.all_logs(run.run_id)
            ]

    def takeover_waits(self) -> list[float]:
        """Seconds from a step's start to its `[Lock] Took over expired lock` line (the wait
        for a dead holder's lease; log times have one-second resolution)."""
        started: dict[str, dt.datetime] = {}
        waits = []
        for line in self.output().splitlines():
            match = _STEP_LINE.match(line)
            if match is None:
                continue
            stamp = dt.datetime.fromisoformat(match["time"])
            if match["event"].startswith("STEP_START"):
                started[match["step"]] = stamp
            elif match["event"].startswith("[Lock] Took over") and match["step"] in started:
                waits.append((stamp - started[match["step"]]).total_seconds())
        return waits

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} (rc={self.poll()}) ---\n{self.output()[-chars:]}"


def start_materialize(
    name: str,
    select: str,
    date: str,
    env: dict[str, str],
    logs: Path,
) -> CliRun:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [
                str(DAGSTER),
                "asset",
                "materialize",
                "-m",
                MODULE,
                "--select",
                select,
                "--partition",
                date,
            ],
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    home = env.get("DAGSTER_HOME")
    return CliRun(name, process, log, time.monotonic(), home=Path(home) if home else None)


def wait_all(runs: Iterable[CliRun], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for run in runs:
        run.wait(max(1.0, deadline - time.monotonic()))


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, runs: Iterable[CliRun] = ()
) -> None:
    """Poll `condition`; fail with the runs' output if it never holds (or a run died)."""
    runs = list(runs)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if runs and all(run.poll() is not None for run in runs):
            if condition():
                return
            raise AssertionError(
                f"runs ended before {what}:\n" + "\n".join(run.tail() for run in runs)
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(r.tail() for r in runs))


def cleanup(runs: Iterable[CliRun]) -> None:
    for run in runs:
        if run.poll() is None:
            run.kill()


# ---------------------------------------------------------------------------- the model


class Gate:
    """A server behaviour that holds chat requests until the test opens the gate, for all
    conversations or for some ids; a request answers `success` once let through (or after
    `limit` seconds, so a forgotten gate cannot hang a test).

    Holding is how a test makes the analysis last exactly as long as it needs (all
    contenders have arrived, the kill has been delivered) whatever the machine's load.
    """

    def __init__(self, limit: float = 180.0) -> None:
        self._cond = threading.Condition()
        self._open = True
        self._let_through: set[str] = set()
        self.limit = limit

    def hold(self) -> None:
        with self._cond:
            self._open = False
            self._let_through.clear()

    def open(self, ids: Iterable[str] | None = None) -> None:
        with self._cond:
            if ids is None:
                self._open = True
            else:
                self._let_through.update(ids)
            self._cond.notify_all()

    def __call__(self, request: FakeRequest) -> Reply | str:
        if request.endpoint != "chat":
            return "success"
        conversation = request.conversation_id or ""
        with self._cond:
            self._cond.wait_for(
                lambda: self._open or conversation in self._let_through, timeout=self.limit
            )
        return "success"


def start_server(latency: float = 0.0) -> tuple[FakeOpenAIServer, Gate]:
    server = FakeOpenAIServer(latency=latency).start()
    gate = Gate()
    server.behaviour = gate
    return server, gate


# ---------------------------------------------------------------------------- uploads


def conversation_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{number:03d}" for number in range(count)]


def conversations_csv(date: str, ids: Iterable[str], *, words: int = 0, variant: str = "") -> bytes:
    """Two messages per conversation, timed on `date`; `words` pads the user message (to make
    documents large), `variant` changes the text (a re-upload of an id must not win)."""
    rows = ["conversation_id,timestamp,role,content"]
    padding = " lorem" * words
    for number, conversation in enumerate(ids):
        minute = number % 60
        hour = 8 + (number // 60) % 12
        rows.append(
            f"{conversation},{date}T{hour:02d}:{minute:02d}:00Z,user,"
            f'"My app keeps crashing{variant} ({conversation}){padding}"'
        )
        rows.append(
            f"{conversation},{date}T{hour:02d}:{minute:02d}:30Z,assistant,"
            f'"Sorry, please update to 4.2{variant}."'
        )
    return ("\n".join(rows) + "\n").encode()


def upload(store: Store, key: str, data: bytes) -> None:
    assert key.startswith("incoming/")
    store.write(key, data)


def prepare_dates(store: Store, store_env: dict[str, str], dates: Iterable[str]) -> None:
    """raw_conversations + normalized_conversations, materialised in this process."""
    from dagster import materialize

    from convsync_pipeline.assets.ingest import build_ingest_assets
    from convsync_pipeline.resources import build_resources
    from convsync_pipeline.settings import load_settings

    settings = load_settings({"CONVSYNC_START_DATE": START_DATE, **store_env})
    assets = build_ingest_assets(settings)
    for date in dates:
        result = materialize(
            assets,
            partition_key=date,
            resources=build_resources(settings),
            raise_on_error=False,
        )
        assert result.success, f"preparing {date} failed"


# ---------------------------------------------------------------------------- the store


def read_document(store: Store, date: str) -> DateDocument:
    """The stored document, checked the way SPEC section 5 defines it; fails loudly if not."""
    raw = store.read(document_key(date))
    assert raw is not None, f"{document_key(date)} is missing"
    json.loads(raw)  # valid JSON first, independently of the model
    document = load_document(store, date).document
    counts = document.count_statuses()
    ids = [c.id for c in document.conversations]
    assert len(ids) == len(set(ids)), f"{date}: duplicate ids {Counter(ids).most_common(3)}"
    assert document.processed_count == counts.success, (
        f"{date}: processedCount {document.processed_count} != {counts.success} successes"
    )
    assert document.summary.model_dump() == counts.model_dump(), (
        f"{date}: summary {document.summary.model_dump()} != recount {counts.model_dump()}"
    )
    for conversation in document.conversations:
        if conversation.processing_status == "success":
            assert conversation.analysis is not None and conversation.processed_at, conversation.id
            assert conversation.processing_error is None, conversation.id
        else:
            assert conversation.processed_at is None, conversation.id
    return document


def lock_generation(store: Store, date: str) -> int:
    raw = store.read(lock_key(date))
    return 0 if raw is None else int(json.loads(raw).get("generation", 0))


def read_summary(store: Store, date: str) -> dict[str, Any] | None:
    raw = store.read(summary_key(date))
    return None if raw is None else json.loads(raw)


def statuses(document: DateDocument) -> dict[str, str]:
    return {c.id: c.processing_status for c in document.conversations}


def successes(document: DateDocument) -> dict[str, tuple[str | None, str]]:
    """id -> (processedAt, analysis JSON) of every success: what must never change again."""
    return {
        c.id: (c.processed_at, json.dumps(c.analysis, sort_keys=True))
        for c in document.conversations
        if c.processing_status == "success"
    }


def unaccounted_sends(document: DateDocument, sent: dict[str, int]) -> dict[str, int]:
    """Requests not explained by an attempt: a conversation is sent once per attempt, and its
    attempts are its retryCount plus the successful one. Anything above is a duplicate."""
    extra = {}
    for conversation in document.conversations:
        attempts = conversation.retry_count + (conversation.processing_status == "success")
        over = sent.get(conversation.id, 0) - attempts
        if over > 0:
            extra[conversation.id] = over
    for conversation_id in set(sent) - {c.id for c in document.conversations}:
        extra[conversation_id] = sent[conversation_id]
    return extra


# ---------------------------------------------------------------------------- reporting


@dataclass
class Outcome:
    """One scenario run on one backend: the numbers docs/reliability-processes.md tabulates."""

    scenario: str
    backend: str
    runs: int = 0
    conversations: int = 0
    faults: int = 0
    duplicates: int = 0
    lost: int = 0
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{key}={value}" for key, value in self.details.items())
        return (
            f"RELIABILITY scenario={self.scenario} backend={self.backend} runs={self.runs} "
            f"conversations={self.conversations} faults={self.faults} "
            f"duplicates={self.duplicates} lost={self.lost} seconds={self.seconds:.1f} {extra}"
        ).rstrip()
