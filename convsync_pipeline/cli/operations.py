"""`convsync status | failed | requeue | reanalyse | migrate | compact | report`: thin shells over
`operations`.

Each handler parses its arguments, calls one operation and prints; all the logic (and every
write) lives in `convsync_pipeline.operations`, shared with the Dagster side.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from convsync_pipeline.cli.progress import ProgressLine
from convsync_pipeline.operations import (
    DocumentProblem,
    OperationError,
    check_range,
    owner_id,
    parse_date,
    stored_dates,
)
from convsync_pipeline.resources.blob_lock import locks_from_settings
from convsync_pipeline.resources.blob_store import open_store
from convsync_pipeline.settings import DEFAULT_STORE, Settings, load_settings
from convsync_pipeline.store.base import Store

ERROR_CHARS = 60


def register(commands: argparse._SubParsersAction) -> None:
    status = commands.add_parser(
        "status", help="counts per date, and notes on anything inconsistent"
    )
    status.add_argument("date", nargs="?", metavar="DATE", help="one date (default: all)")
    status.set_defaults(handler=_status)

    failed = commands.add_parser(
        "failed",
        help="list failed conversations (the dead letters)",
        description="List failed conversations. Exits 1 if a document could not be read.",
    )
    failed.add_argument("date", nargs="?", metavar="DATE", help="one date (default: all)")
    _range_arguments(failed)
    failed.add_argument("--json", action="store_true", help="print a JSON list")
    _show_text_argument(failed)
    failed.set_defaults(handler=_failed)

    requeue = commands.add_parser(
        "requeue", help="give failed conversations of DATE a fresh set of attempts"
    )
    requeue.add_argument("date", metavar="DATE")
    requeue.add_argument(
        "--id",
        dest="ids",
        action="extend",
        nargs="+",
        metavar="ID",
        help="only these conversations (default: every failed one of DATE)",
    )
    requeue.set_defaults(handler=_requeue)

    reanalyse = commands.add_parser(
        "reanalyse",
        help="re-analyse answers of another analysis version (a new prompt or model)",
        description=(
            "Make the success conversations of D1..D2 whose analysis version (analyser, model, "
            "prompt) is not the current one due again, and analyse them: each once per "
            "version, their old answers kept until the new ones succeed. Prints the count "
            "and the estimated tokens and cost first; --dry-run stops there."
        ),
    )
    reanalyse.add_argument("--from", dest="start", metavar="D1", required=True)
    reanalyse.add_argument("--to", dest="end", metavar="D2", required=True)
    reanalyse.add_argument(
        "--if-version-not",
        dest="if_version_not",
        metavar="V",
        help="also leave alone answers of version V (default: only the current version's)",
    )
    reanalyse.add_argument(
        "--dry-run", action="store_true", help="print what it would send and cost; send nothing"
    )
    reanalyse.set_defaults(handler=_reanalyse)

    migrate = commands.add_parser(
        "migrate", help="add processingStatus & co. to legacy date documents"
    )
    migrate.add_argument(
        "--dry-run", action="store_true", help="show what would change; take no lock, write nothing"
    )
    migrate.set_defaults(handler=_migrate)

    compact = commands.add_parser(
        "compact",
        help="fold each date's log (journal/) into its document; --prune removes folded entries",
        description=(
            "Checkpoint every date whose log has entries its document has not folded yet (the "
            "pipeline does this at the end of each run; this catches crashed runs and merges "
            "no analysis followed). --prune then deletes folded entries of a folder store; "
            "convsync never deletes them otherwise (on S3: a lifecycle rule, see README)."
        ),
    )
    compact.add_argument("date", nargs="?", metavar="DATE", help="one date (default: all)")
    compact.add_argument(
        "--prune", action="store_true", help="delete folded log entries (folder store only)"
    )
    compact.set_defaults(handler=_compact)

    forget = commands.add_parser(
        "forget",
        help="erase conversations everywhere convsync keeps them (--id ID… or --match TEXT)",
        description=(
            "Erase conversations from date documents and their log, staging, quarantine "
            "records and summaries, under each date's lock, and record a tombstone so a "
            "re-upload never brings them back. Uploads under incoming/ are listed, never "
            "touched. Running it again changes nothing."
        ),
    )
    forget.add_argument(
        "--id", dest="ids", action="extend", nargs="+", metavar="ID", default=[],
        help="conversation ids to erase",
    )
    forget.add_argument(
        "--match", metavar="TEXT",
        help="erase every conversation whose id or words contain TEXT (case-insensitive)",
    )
    forget.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be removed; take no lock, write nothing",
    )
    _range_arguments(forget)
    _show_text_argument(forget)
    forget.set_defaults(handler=_forget)

    report = commands.add_parser(
        "report",
        help="write a self-contained HTML report with charts (opens offline)",
        description=(
            "Write one self-contained HTML page (charts, per-date table, failed conversations) "
            "about the dates in the store. It opens offline in any browser."
        ),
    )
    _range_arguments(report)
    report.add_argument(
        "--out",
        type=Path,
        default=Path("report.html"),
        metavar="FILE",
        help="where to write the page (default: report.html in the current folder)",
    )
    report.set_defaults(handler=_report)


def _show_text_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--show-text",
        action="store_true",
        help="show customers' words and errors unredacted (for an operator; default: "
        "redacted like everything convsync shows)",
    )


def _range_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", metavar="D", help="first date, YYYY-MM-DD")
    parser.add_argument("--to", dest="end", metavar="D", help="last date, YYYY-MM-DD")


def _user_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """An OperationError is the user's to fix: one line, exit 1 (through CommandError)."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from convsync_pipeline.cli import CommandError

        try:
            return handler(args)
        except OperationError as error:
            raise CommandError(str(error)) from None

    return wrapped


def existing_store(settings: Settings) -> Store:
    """The configured store, for commands that only read or fix it: a folder that does not
    exist is an error naming it, never created (only `upload` and the pipeline create one)."""
    from convsync_pipeline.cli import CommandError

    if not settings.store.startswith("s3://"):
        root = Path(settings.store.removeprefix("file://")).expanduser().resolve()
        if not root.is_dir():
            told = os.environ.get("CONVSYNC_STORE", "").strip()
            setting = f"CONVSYNC_STORE={told}" if told else f"CONVSYNC_STORE unset: {DEFAULT_STORE}"
            raise CommandError(
                f"no store at {root} ({setting}); point CONVSYNC_STORE at your store, or "
                "start one with `convsync upload FILE…` or `convsync demo`"
            )
    return open_store(settings)


NO_DOCUMENTS = (
    "no date documents in {url} yet: upload exports (`convsync upload FILE…`), then "
    "process them (`dg launch --assets '*' --partition DATE`, or new_upload_sensor)"
)


# -- output helpers ---------------------------------------------------------------------


def _text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns; numbers to the right."""
    cells = [[str(c) for c in headers], *[[_cell(c) for c in row] for row in rows]]
    numeric = [
        all(isinstance(row[i], int) or row[i] in {"-", ""} for row in rows) and bool(rows)
        for i in range(len(headers))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _clip(text: str | None, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _warn(message: str) -> None:
    print(f"convsync: warning: {message}", file=sys.stderr)


def _no_document(problems: Sequence[DocumentProblem], date: str) -> None:
    from convsync_pipeline.cli import CommandError

    if problems:
        problem = problems[0]
        if problem.reason == "no such document":
            raise CommandError(f"no date document for {date} ({problem.key})")
        raise CommandError(str(problem))


# -- commands ----------------------------------------------------------------------------


@_user_errors
def _status(args: argparse.Namespace) -> int:
    from convsync_pipeline.operations.status import collect_status
    from convsync_pipeline.resources.analyzer import settings_analysis_version

    settings = load_settings()
    date = parse_date(args.date) if args.date else None
    store = existing_store(settings)
    dates = [date] if date else stored_dates(store)
    if not dates:
        print(NO_DOCUMENTS.format(url=store.url))
        return 0
    with ProgressLine("status") as progress:
        report = collect_status(store, settings, dates, owner=owner_id("status"), progress=progress)
    if date and report.dates[0].problem is not None:
        _no_document([report.dates[0].problem], date)
    rows = []
    for row in report.dates:
        if row.counts is None:
            rows.append([row.date, "-", "-", "-", "-", "-", "-", "-", "unreadable", "-"])
            continue
        c = row.counts
        rows.append(
            [
                row.date,
                c.total,
                c.pending,
                c.processing,
                c.success,
                c.failed,
                row.processed_count,
                row.version,
                row.updated_at or "-",
                row.at_current_version,
            ]
        )
    totals = report.totals
    rows.append(
        [
            "TOTAL",
            totals.total,
            totals.pending,
            totals.processing,
            totals.success,
            totals.failed,
            report.processed_total,
            "",
            "",
            report.at_current_total,
        ]
    )
    print(f"store: {store.url}")
    print(f"current analysis version: {settings_analysis_version(settings)}")
    print(
        _text_table(
            [
                "date",
                "total",
                "pending",
                "processing",
                "success",
                "failed",
                "processedCount",
                "version",
                "last update",
                "at-current-version",
            ],
            rows,
        )
    )
    problems = report.notes("inconsistent")
    if problems:
        print(f"\ninconsistencies ({len(problems)}):")
        for note in problems:
            print(f"  ! {note}")
    else:
        print("\nno inconsistencies found")
    infos = report.notes("info")
    if infos:
        print("notes:")
        for note in infos:
            print(f"  - {note}")
    return 0


@_user_errors
def _failed(args: argparse.Namespace) -> int:
    from convsync_pipeline.cli import CommandError
    from convsync_pipeline.core.redaction import Redactor
    from convsync_pipeline.operations.deadletters import list_failed

    if args.date and (args.start or args.end):
        raise CommandError("give either a DATE or --from/--to, not both")
    date = parse_date(args.date) if args.date else None
    start, end = check_range(args.start, args.end)
    settings = load_settings()
    store = existing_store(settings)
    dates = [date] if date else stored_dates(store, start, end)
    with ProgressLine("failed") as progress:
        listing = list_failed(
            store, dates, progress, Redactor(enabled=False) if args.show_text else None
        )
    if date:
        _no_document(listing.problems, date)
    if args.json:
        print(json.dumps([e.to_json() for e in listing.entries], ensure_ascii=False, indent=2))
    elif listing.entries:
        print(
            _text_table(
                ["date", "id", "attempts", "last error", "first customer words"],
                [
                    [
                        e.date,
                        e.id,
                        e.attempts,
                        _clip(e.error_shown, ERROR_CHARS + 31 * bool(e.reanalysis_to)),
                        e.first_words,
                    ]
                    for e in listing.entries
                ],
            )
        )
        dates_hit = len(listing.by_date())
        print(
            f"\n{len(listing.entries)} failed conversation(s) on {dates_hit} date(s); "
            "`convsync requeue DATE [--id ID…]` gives them a fresh set of attempts"
        )
    else:
        print(f"no failed conversations ({listing.dates_checked} date(s) checked)")
    for problem in listing.problems:
        _warn(f"not listed: {problem}")
    return 1 if listing.problems else 0


@_user_errors
def _requeue(args: argparse.Namespace) -> int:
    from convsync_pipeline.operations.deadletters import requeue_failed

    date = parse_date(args.date)
    settings = load_settings()
    store = existing_store(settings)
    locks = locks_from_settings(store, settings)
    outcome = requeue_failed(store, locks, date, owner=owner_id("requeue"), ids=args.ids)
    for ident in outcome.unknown:
        print(
            f"convsync: error: {date} has no conversation {ident!r}; nothing changed for it",
            file=sys.stderr,
        )
    for ident, state in outcome.not_failed.items():
        print(
            f"convsync: error: conversation {ident!r} of {date} is {state}, not failed; "
            "nothing changed for it",
            file=sys.stderr,
        )
    if outcome.requeued:
        print(
            f"requeued {len(outcome.requeued)} conversation(s) of {date}: pending with 0 "
            f"attempts (document version {outcome.version}); the next run analyses them"
        )
    elif args.ids:
        print(f"nothing requeued for {date}")
    else:
        print(f"nothing to requeue: {date} has no failed conversations")
    return 0 if outcome.ok else 1


def _money(value: float | None) -> str:
    return "unknown (no price for this model)" if value is None else f"${value:,.4f}"


@_user_errors
def _reanalyse(args: argparse.Namespace) -> int:
    from convsync_pipeline.cli import CommandError
    from convsync_pipeline.operations.reanalyse import plan_reanalysis, reanalyse_dates
    from convsync_pipeline.pipeline.analyse import AnalysisReport, AnalysisSystemError
    from convsync_pipeline.resources.analyzer import (
        AnalyzerResource,
        make_analyzer,
        settings_analysis_version,
    )

    start, end = check_range(args.start, args.end)
    settings = load_settings()
    store = existing_store(settings)
    target = settings_analysis_version(settings)
    dates = stored_dates(store, start, end)
    print(f"current analysis version: {target}")
    if not dates:
        print(f"no date documents from {start} to {end} in {store.url}")
        return 0
    with ProgressLine("reanalyse") as progress:
        plan = plan_reanalysis(
            store, settings, dates, target, if_version_not=args.if_version_not, progress=progress
        )
    rows = [[d.date, d.to_mark, d.already_due, d.prompt_tokens, d.completion_tokens]
            for d in plan.dates if d.conversations]
    if rows:
        print(_text_table(
            ["date", "to re-analyse", "already due", "prompt tokens", "completion tokens"], rows
        ))
    usage = plan.usage
    print(
        f"{plan.conversations} conversation(s) on {len(rows)} date(s) of {len(dates)}; "
        f"estimated {usage.promptTokens:,} prompt + {usage.completionTokens:,} completion "
        f"tokens; cost {_money(plan.cost_usd())} live, {_money(plan.cost_usd(batch=True))} "
        "with the Batch API"
    )
    for problem in plan.problems:
        _warn(f"skipped: {problem}")
    if args.dry_run or not plan.conversations:
        if args.dry_run:
            print("dry run: nothing marked, nothing sent")
        return 1 if plan.problems else 0
    todo = [d.date for d in plan.dates if d.conversations]  # unreadable dates are not planned

    def show(report: AnalysisReport) -> None:
        print(
            f"{report.date}: {report.reanalysis_marked} marked, {report.succeeded} analysed, "
            f"{report.failed_attempts} failed attempt(s), {report.reanalysis_failed} kept "
            f"their old answer after all attempts, {report.still_due} still due"
        )

    locked: list[str] = []

    def skip(error: Exception) -> None:
        locked.append(str(error))
        _warn(f"skipped, run it again later: {error}")

    try:
        reanalyse_dates(
            store,
            locks_from_settings(store, settings),
            settings,
            lambda: make_analyzer(settings),
            todo,
            target,
            owner=owner_id("reanalyse"),
            if_version_not=args.if_version_not,
            on_date=show,
            # CONVSYNC_OPENAI_MODE decides, as for ai_analysis: live, or a batch whose
            # answers the next run (or the batch sensor) folds in.
            make_batch_client=AnalyzerResource.from_settings(settings).batch_client_factory(),
            on_locked=skip,
        )
    except AnalysisSystemError as error:
        raise CommandError(f"{error} (nothing was charged an attempt)") from None
    return 1 if plan.problems or locked else 0


@_user_errors
def _migrate(args: argparse.Namespace) -> int:
    from convsync_pipeline.operations.migrate import migrate

    settings = load_settings()
    store = existing_store(settings)
    with ProgressLine("migrate") as progress:
        report = migrate(
            store,
            locks_from_settings(store, settings),
            owner=owner_id("migrate"),
            dry_run=args.dry_run,
            progress=progress,
        )
    if not report.documents:
        print(NO_DOCUMENTS.format(url=store.url))
        return 0
    for document in report.documents:
        print(document.describe())
    print(report.describe())
    if report.skipped:
        keys = ", ".join(d.key for d in report.skipped)
        print(
            f"convsync: error: {len(report.skipped)} document(s) skipped, left untouched: {keys}",
            file=sys.stderr,
        )
        return 1
    return 0


@_user_errors
def _compact(args: argparse.Namespace) -> int:
    from convsync_pipeline.operations.compact import compact

    dates = [parse_date(args.date)] if args.date else None
    settings = load_settings()
    store = existing_store(settings)
    with ProgressLine("compact") as progress:
        report = compact(
            store,
            locks_from_settings(store, settings),
            owner=owner_id("compact"),
            prune=args.prune,
            dates=dates,
            progress=progress,
        )
    if not report.dates:
        print(f"no dates in {store.url}")
    for date in report.dates:
        print(date.describe())
    if report.skipped:
        print(
            f"convsync: error: {len(report.skipped)} date(s) skipped, left untouched",
            file=sys.stderr,
        )
        return 1
    return 0


@_user_errors
def _forget(args: argparse.Namespace) -> int:
    from convsync_pipeline.operations.forget import Selector, forget, forget_dates
    from convsync_pipeline.settings import display_redactor

    selector = Selector(ids=frozenset(args.ids), match=args.match)
    start, end = check_range(args.start, args.end)
    settings = load_settings()
    store = existing_store(settings)
    dates = [
        d for d in forget_dates(store) if (not start or d >= start) and (not end or d <= end)
    ]
    with ProgressLine("forget") as progress:
        report = forget(
            store,
            locks_from_settings(store, settings),
            selector,
            owner=owner_id("forget"),
            dry_run=args.dry_run,
            dates=dates,
            progress=progress,
        )
    text = report.describe()
    print(text if args.show_text else display_redactor()(text))
    return 0


@_user_errors
def _report(args: argparse.Namespace) -> int:
    from convsync_pipeline.cli import CommandError
    from convsync_pipeline.operations.report import collect_report, render_report

    start, end = check_range(args.start, args.end)
    settings = load_settings()
    store = existing_store(settings)
    with ProgressLine("report") as progress:
        data = collect_report(store, start=start, end=end, progress=progress)
    page = render_report(data)
    out: Path = args.out
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as error:
        raise CommandError(f"cannot write {out}: {error.strerror}") from None
    print(
        f"wrote {out.resolve()} ({len(data.days)} date(s), {data.totals.total} conversations, "
        f"{len(data.failed)} failed)"
    )
    for problem in data.problems:
        _warn(f"not in the report: {problem}")
    return 0
