"""OpenAI Batch API requests and results, as pure data (SPEC 7, batch mode).

A request line is exactly the live request (same messages, same strict `response_format`,
same redaction: the caller passes what `analyzers.openai` builds) wrapped as
`{custom_id, method, url, body}`. `custom_id` names the date, the conversation and its
attempt number, so an answer can only ever be credited to the attempt that asked for it; the
results are matched by it, never by order. Files are split at OpenAI's limits (50,000
requests, 200 MB) and hold one model each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

BATCH_ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1000 * 1000  # OpenAI's 200 MB; kept in decimal units to be safe
# Provider states: a batch in one of these will not change any more.
ENDED_STATES = frozenset({"completed", "expired", "failed", "cancelled"})
LIVE_STATES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


def custom_id(date: str, conversation_id: str, attempt: int) -> str:
    """`date|attempt|conversation id`: unique per attempt; the id goes last, whole, so an id
    holding any character still maps back exactly (matching is by equality anyway)."""
    return f"{date}|{attempt}|{conversation_id}"


@dataclass(frozen=True)
class RequestLine:
    custom_id: str
    conversation_id: str
    data: bytes  # the JSONL line, newline included


def request_line(
    date: str,
    conversation_id: str,
    attempt: int,
    model: str,
    messages: list[dict[str, str]],
    response_format: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> RequestLine:
    """One JSONL line of a batch input file: the live chat-completions body, wrapped."""
    cid = custom_id(date, conversation_id, attempt)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "response_format": response_format,
        **(extra or {}),
    }
    line = {"custom_id": cid, "method": "POST", "url": BATCH_ENDPOINT, "body": body}
    data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    return RequestLine(cid, conversation_id, data)


@dataclass
class InputFile:
    """The lines of one batch: at most the request and byte limits, one model."""

    model: str
    lines: list[RequestLine] = field(default_factory=list)
    size: int = 0

    def content(self) -> bytes:
        return b"".join(line.data for line in self.lines)


class RequestTooLargeError(ValueError):
    """One request alone exceeds a batch file's byte limit."""


def split_files(
    lines: Iterable[tuple[str, RequestLine]],
    max_requests: int = MAX_REQUESTS_PER_FILE,
    max_bytes: int = MAX_BYTES_PER_FILE,
) -> Iterator[InputFile]:
    """Group (model, line) pairs into input files within the limits, one model per file."""
    open_files: dict[str, InputFile] = {}
    for model, line in lines:
        size = len(line.data)
        if size > max_bytes:
            raise RequestTooLargeError(
                f"the request for conversation {line.conversation_id!r} is {size} bytes, more "
                f"than a batch file may hold ({max_bytes})"
            )
        current = open_files.get(model)
        if current is not None and (
            len(current.lines) >= max_requests or current.size + size > max_bytes
        ):
            yield open_files.pop(model)
            current = None
        if current is None:
            current = open_files[model] = InputFile(model)
        current.lines.append(line)
        current.size += size
    yield from open_files.values()


@dataclass(frozen=True)
class LineResult:
    """What the provider said about one request: a completion body or why there is none."""

    custom_id: str
    body: dict[str, Any] | None = None  # a 200 chat.completion body
    error: str | None = None  # the reason this attempt failed
    expired: bool = False  # batch_expired: never run, the window closed first


def _error_text(code: Any, message: Any, status: Any = None) -> str:
    parts = [str(part) for part in (status, code) if part not in (None, "")]
    head = " ".join(parts)
    text = str(message or "").strip()[:300]
    return f"{head}: {text}" if head and text else head or text or "no details"


def parse_result_line(raw: bytes | str) -> LineResult | None:
    """One line of an output or error file; None for a line without a custom_id."""
    try:
        item = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
        return None
    cid = item["custom_id"]
    error = item.get("error")
    if isinstance(error, dict) and (error.get("code") or error.get("message")):
        code = error.get("code")
        return LineResult(
            cid,
            error="the batch returned an error for this request "
            f"({_error_text(code, error.get('message'))})",
            expired=code == "batch_expired",
        )
    response = item.get("response")
    if not isinstance(response, dict):
        return LineResult(cid, error="the batch returned a line without a response")
    status = response.get("status_code")
    body = response.get("body")
    if status != 200 or not isinstance(body, dict):
        detail = body.get("error") if isinstance(body, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        return LineResult(
            cid,
            error="the server rejected this request in the batch "
            f"({_error_text(detail.get('code'), detail.get('message'), status)})",
        )
    return LineResult(cid, body=body)


def parse_results(*files: bytes | None) -> dict[str, LineResult]:
    """Every line of the output and error files by custom_id (an answer beats an error)."""
    results: dict[str, LineResult] = {}
    for content in files:
        if not content:
            continue
        for raw in content.splitlines():
            if not raw.strip():
                continue
            result = parse_result_line(raw)
            if result is None:
                continue
            known = results.get(result.custom_id)
            if known is None or (known.body is None and result.body is not None):
                results[result.custom_id] = result
    return results
