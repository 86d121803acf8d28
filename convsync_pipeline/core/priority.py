"""Which conversations to analyse first when a run may take only `batch_size` of them."""

from __future__ import annotations

import re

from convsync_pipeline.core.document import Conversation

_URGENT_WORDS = re.compile(
    r"\b(manager|supervisor|lawyer|legal action|chargeback|urgent|asap|emergency|"
    r"unacceptable|real person|human)\b",
    re.IGNORECASE,
)
_PRIORITY_VALUES = {"urgent": 3, "critical": 3, "p0": 3, "p1": 2, "high": 2, "medium": 1, "p2": 1}


def urgency(conversation: Conversation) -> int:
    """0 (ordinary) to 4: a `priority` meta field, plus escalation language from anyone."""
    score = 0
    for message in conversation.messages:
        value = str(message.meta.get("priority", "")).strip().lower()
        score = max(score, _PRIORITY_VALUES.get(value, 0))
    if any(_URGENT_WORDS.search(message.content) for message in conversation.messages):
        score += 1
    return score
