"""A realistic, deterministic sample of support exports for `convsync demo`.

Several formats and timestamp styles, a few bad records and conversations re-exported in a
later upload, so the demo shows quarantine and de-duplication as well as analysis.
"""

from __future__ import annotations

import csv
import datetime as dt
import email.utils
import gzip
import io
import json
import random
from dataclasses import dataclass

SCRIPTS: list[tuple[list[str], list[str]]] = [
    (
        ["Hi, I was charged twice for my subscription this month.", "Can I get a refund?"],
        ["Sorry about that! I've refunded the duplicate charge.", "It should appear in 3-5 days."],
    ),
    (
        ["The app keeps crashing when I upload photos.", "It's been broken since the update."],
        ["Thanks for reporting, our engineers are looking into the crash."],
    ),
    (
        ["I can't log in, it says my password is wrong.", "I reset it twice already."],
        ["I've unlocked your account, please try again.", "Glad it works now!"],
    ),
    (
        ["The new dashboard is great! Love the charts.", "Any plans for a dark mode?"],
        ["Thank you! Dark mode is on our roadmap."],
    ),
    (
        ["My order hasn't arrived and it's two weeks late.", "This is unacceptable."],
        ["I'm sorry, let me check with the carrier."],
    ),
    (
        ["I need to talk to a manager right now.", "Nobody has fixed my billing issue."],
        ["I understand, I'm escalating this to my supervisor."],
    ),
    (
        ["How do I export my data to CSV?"],
        ["Go to Settings > Export and choose CSV.", "Anything else?"],
    ),
    (
        ["Please cancel my subscription, it's too expensive."],
        ["Done, your subscription is cancelled."],
    ),
    (
        ["The API returns a 500 error when I call the integration endpoint."],
        ["We found the bug and deployed a fix. Could you retry?"],
    ),
    (
        ["Everything is slow today, pages take forever to load."],
        ["We had a performance incident; it's resolved now."],
    ),
]


@dataclass(frozen=True)
class SampleMessage:
    conversation_id: str
    moment: dt.datetime
    role: str
    content: str


def _conversation(rng: random.Random, conversation_id: str, start: dt.datetime):
    customer, agent = rng.choice(SCRIPTS)
    moment = start
    messages = []
    for turn in range(max(len(customer), len(agent))):
        for role, lines in (("user", customer), ("agent", agent)):
            if turn < len(lines):
                messages.append(SampleMessage(conversation_id, moment, role, lines[turn]))
                moment += dt.timedelta(seconds=rng.randint(20, 400))
    return messages


def _day_messages(rng: random.Random, day: dt.date, count: int, tag: str) -> list[SampleMessage]:
    messages = []
    for number in range(count):
        start = dt.datetime.combine(day, dt.time(0, 0), dt.UTC) + dt.timedelta(
            seconds=rng.randint(0, 86_000)
        )
        messages.extend(_conversation(rng, f"{tag}-{day:%m%d}-{number:03d}", start))
    return messages


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _csv(rows: list[dict[str, str]], header: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def build_sample(last_day: dt.date, days: int = 7, seed: int = 7) -> dict[str, bytes]:
    """Upload key -> bytes, spread over the `days` days ending with `last_day`."""
    rng = random.Random(seed)
    first = last_day - dt.timedelta(days=days - 1)
    dates = [first + dt.timedelta(days=offset) for offset in range(days)]
    uploads: dict[str, bytes] = {}
    first_day: list[SampleMessage] = []
    for index, day in enumerate(dates):
        messages = _day_messages(rng, day, rng.randint(35, 50), "chat")
        first_day = first_day or messages
        style = index % 4
        folder = f"incoming/{day.isoformat()}"
        if style == 0:  # plain CSV with ISO Z, plus one bad row of each kind
            rows = [
                {"conversation_id": m.conversation_id, "timestamp": _iso(m.moment),
                 "role": m.role, "content": m.content, "channel": "web"}
                for m in messages
            ]
            rows.append({"conversation_id": "", "timestamp": _iso(messages[0].moment),
                         "role": "user", "content": "no id", "channel": "web"})
            rows.append({"conversation_id": "chat-bad", "timestamp": "not a date",
                         "role": "user", "content": "bad time", "channel": "web"})
            header = ["conversation_id", "timestamp", "role", "content", "channel"]
            uploads[f"{folder}/support-export.csv"] = _csv(rows, header)
        elif style == 1:  # aliased headers and human US timestamps
            rows = [
                {"conversationId": m.conversation_id,
                 "createdAt": m.moment.strftime("%m/%d/%Y %I:%M %p"),
                 "sender": m.role, "message": m.content}
                for m in messages
            ]
            uploads[f"{folder}/helpdesk.csv"] = _csv(
                rows, ["conversationId", "createdAt", "sender", "message"]
            )
        elif style == 2:  # JSON conversation objects with epoch milliseconds
            conversations: dict[str, list[SampleMessage]] = {}
            for m in messages:
                conversations.setdefault(m.conversation_id, []).append(m)
            body = {
                "conversations": [
                    {"id": cid, "channel": "chat", "messages": [
                        {"role": m.role, "content": m.content,
                         "timestamp": int(m.moment.timestamp() * 1000)} for m in items
                    ]}
                    for cid, items in conversations.items()
                ]
            }
            uploads[f"{folder}/chat.json"] = json.dumps(body).encode()
        else:  # gzipped JSONL with RFC 2822 and offsets, one broken line
            lines = []
            for position, m in enumerate(messages):
                stamp = (
                    email.utils.format_datetime(m.moment)
                    if position % 2
                    else m.moment.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()
                )
                lines.append(json.dumps({"conversation": m.conversation_id, "time": stamp,
                                         "author": m.role, "text": m.content}))
            lines.insert(3, '{"conversation": "chat-broken", "time": ')
            uploads[f"{folder}/messages.jsonl.gz"] = gzip.compress(
                "\n".join(lines).encode(), mtime=0
            )
    # A later re-export of the first day: its conversations are already present.
    first_rows = [
        {"conversation_id": m.conversation_id, "timestamp": m.moment.strftime("%Y-%m-%d %H:%M:%S"),
         "role": m.role, "content": m.content}
        for m in first_day[:12]
    ]
    uploads[f"incoming/{dates[-1].isoformat()}/reexport-{dates[0].isoformat()}.csv"] = _csv(
        first_rows, ["conversation_id", "timestamp", "role", "content"]
    )
    return uploads
