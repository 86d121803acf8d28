"""The deterministic offline analyser (SPEC section 7): rules plus a support-tuned VADER.

Used by default and in tests, so it must need no network, no key and no model download, and
give the same analysis for the same conversation every time. It reads the customer's words
(roles such as user/customer/client/visitor; every message if there are none) and makes the
calls a person skimming the conversation would make:

- sentiment: VADER (its lexicon ships in the `vaderSentiment` wheel) with the lexicon adjusted
  for support chats. As shipped it scores "The app keeps crashing" 0.0 and "please fix it"
  positive (NOTES "Offline analysis"), so courtesy words are neutralised and domain words
  ("crashing", "refund", "charged twice", "not working", ...) are added.
- topics, intent, resolution, escalation: small, readable keyword rules.
- summary: extractive only (the customer's own opening words plus counts), never invented.
- usage: an approximation (whitespace-separated words of the input as prompt tokens, none
  generated); nothing is billed, it only keeps the `Analysis` shape the same as the LLM's.

An empty conversation (no message with text) gets a valid neutral analysis with resolution
`unknown` rather than an error: the input will not change, so an error would only burn the
conversation's attempts and then mark it `failed` for a review that has nothing to review.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
from vaderSentiment.vaderSentiment import normalize as vader_normalize

from convsync_pipeline.core.analysis import (
    Analysis,
    ConversationAnalysisError,
    Resolution,
    Sentiment,
    TokenUsage,
    analysis_version,
    fingerprint,
)
from convsync_pipeline.core.document import Conversation, Message

ANALYZER_NAME = "local"
MODEL_NAME = "convsync-local-rules-v1"
# Bump when the rules or lexicon change what an analysis says: it is the local analyser's
# prompt version, and changing it makes earlier answers re-analysable.
RULES_VERSION = "2026-11-29.1"
ANALYSIS_VERSION = analysis_version(
    ANALYZER_NAME, MODEL_NAME, RULES_VERSION, fingerprint(ANALYZER_NAME, MODEL_NAME, RULES_VERSION)
)

CUSTOMER_ROLES = frozenset(
    {
        "user",
        "customer",
        "client",
        "visitor",
        "guest",
        "human",
        "end_user",
        "enduser",
        "contact",
        "caller",
        "member",
        "buyer",
        "shopper",
        "requester",
    }
)

# VADER's normalisation constant (vaderSentiment.normalize's default alpha).
VADER_ALPHA = 15.0
# VADER's own cut-offs for its compound score.
POSITIVE_THRESHOLD = 0.05
NEGATIVE_THRESHOLD = -0.05
# A customer this negative, frustrated and still unresolved needs a person.
ESCALATION_SCORE = -0.5
ANGRY_CANCEL_SCORE = -0.4
# With no specific request, this negative is a complaint and this positive is feedback.
COMPLAINT_SCORE = -0.3
FEEDBACK_SCORE = 0.5

MAX_TOPICS = 5
SUMMARY_EXCERPT_CHARS = 200
# VADER is quadratic in the length of one text, so sentences longer than this are scored in
# chunks; and only the first MAX_MESSAGE_CHARS of a message are read (pasted logs, dumps).
CHUNK_WORDS = 60
MAX_MESSAGE_CHARS = 8_000
# Resolution is read from the end of the conversation only.
RESOLUTION_WINDOW = 4

# --- sentiment lexicon -------------------------------------------------------------------------

# Multi-word expressions VADER cannot see (it scores single tokens), rewritten into one token
# before scoring. Order matters: longer, negative phrasings come before the positive ones.
_PHRASES: tuple[tuple[str, str], ...] = (
    (
        r"(?:charged|billed) (?:twice|two times|2 times|three times|3 times|double)"
        r"|double[- ]?(?:charged|billed)",
        "cs_charged_twice",
    ),
    (
        r"(?:still )?(?:not|never) (?:been )?(?:fixed|resolved|solved|sorted)"
        r"|still broken|same (?:problem|issue|error|thing)",
        "cs_not_fixed",
    ),
    (
        r"(?:is|are|was|were|it's|it is|still)? ?not working"
        r"|(?:isn't|aren't|wasn't|stopped) working"
        r"|(?:doesn't|does not|didn't|did not|won't|will not|don't|do not|never) "
        r"(?:work|load|open|start|sync|upload|save|respond)",
        "cs_not_working",
    ),
    (
        r"(?:can't|cannot|can not|couldn't|could not|unable to) "
        r"(?:log ?in|sign ?in|log on|access|get in(?:to)?)|locked out",
        "cs_cannot_login",
    ),
    (
        r"(?:takes?|taking|took) (?:forever|ages)|(?:spins|spinning|loads|loading) forever"
        r"|forever to load|keeps (?:spinning|loading)|stuck (?:on )?loading",
        "cs_takes_forever",
    ),
    (r"thank(?:s| you) (?:a lot |very much |so much )?for nothing", "cs_sarcasm"),
    (
        r"never (?:arrived|came|received|got)"
        r"|(?:hasn't|has not|haven't|have not|didn't|did not) "
        r"(?:arrived|arrive|received|receive|gotten|got)|still waiting|been waiting"
        r"|(?:hasn't|has not|haven't|have not) (?:been )?(?:updated|changed|moved|shipped"
        r"|processed)|no updates?",
        "cs_still_waiting",
    ),
    (r"(?:was|were|is|are) supposed to", "cs_supposed_to"),
    (r"(?:is|are|was|were|has been|have been|been|went|goes|keeps going) down", "cs_outage"),
    (
        r"(?:nobody|no one|no-one) (?:answers|answered|responds|responded|replies|replied"
        r"|helps|helped|cares|calls back)|no (?:answer|response|reply)",
        "cs_ignored",
    ),
    (r"where(?:'s| is| are) (?:my|our) (?:order|package|parcel|delivery|refund|money)", "cs_where"),
    (
        r"(?:works|working) (?:now|again|perfectly|fine now)"
        r"|(?:that|it|this) (?:worked|fixed it|did it)|did the trick|problem solved"
        r"|issue (?:is )?resolved|all sorted",
        "cs_works_now",
    ),
    (r"(?:i|we) would like|(?:i|we)'d like|would like", "want"),
    (r"good (?:morning|afternoon|evening|day)", "hello"),
    (r"(?:best|kind|warm) regards|best wishes|all the best", "regards"),
    (r"thank you", "thanks"),
    (
        r"(?:i )?hope (?:you're|you are|this finds you|all is) (?:doing )?(?:well|good|great)"
        r"|hope you(?:'re| are) having a (?:good|great|nice|lovely) (?:day|week)",
        "hello",
    ),
    (r"sorry to bother(?: you)?", "hello"),
    (r"(?:credit|debit) card", "card"),
    (r"best way", "way"),
    (r"in order to", "to"),
    (r"feel free", "please"),
)

_LEXICON_UPDATES: Mapping[str, float] = MappingProxyType(
    {
        # Courtesy and support boilerplate: not the customer's feelings.
        "please": 0.0,
        "help": 0.0,
        "helps": 0.0,
        "helped": 0.0,
        "helping": 0.0,
        "support": 0.0,
        "supported": 0.0,
        "care": 0.0,
        "dear": 0.0,
        "credit": 0.0,
        "clear": 0.0,
        "share": 0.0,
        "save": 0.0,
        "pay": 0.0,
        "want": 0.0,
        "free": 0.0,
        "pretty": 0.0,
        "legal": 0.0,
        "honestly": 0.0,
        "important": 0.0,
        "true": 0.3,
        "interested": 0.5,
        "sure": 0.0,
        "yes": 0.3,
        "ok": 0.0,
        "okay": 0.0,
        "no": -0.4,
        "hope": 0.6,
        "kindly": 0.3,
        "appreciate": 0.8,
        "appreciated": 0.8,
        # Gratitude stays mildly positive.
        "thanks": 0.8,
        "thank": 0.6,
        "thx": 0.6,
        "ty": 0.3,
        "cheers": 0.6,
        # Support-domain trouble.
        "crash": -2.0,
        "crashes": -2.0,
        "crashed": -2.0,
        "crashing": -2.0,
        "bug": -1.5,
        "bugs": -1.5,
        "buggy": -2.0,
        "glitch": -1.5,
        "glitches": -1.5,
        "glitchy": -1.8,
        "error": -1.5,
        "errors": -1.5,
        "freeze": -1.5,
        "freezes": -1.5,
        "freezing": -1.5,
        "frozen": -1.5,
        "slow": -1.3,
        "slower": -1.3,
        "sluggish": -1.3,
        "laggy": -1.5,
        "lagging": -1.5,
        "unresponsive": -1.5,
        "outage": -2.0,
        "downtime": -1.5,
        "timeout": -1.0,
        "incorrect": -1.2,
        "unable": -0.8,
        "delayed": -1.2,
        "late": -0.8,
        "declined": -0.8,
        "block": -1.0,
        "joke": -1.5,
        "ridiculous": -2.0,
        "urgent": -0.6,
        "urgently": -0.6,
        "asap": -0.4,
        "scammed": -2.5,
        "refund": -1.0,
        "refunds": -0.8,
        "overcharged": -2.0,
        "cancellation": -0.8,
        "canceled": -1.0,
        "cancelling": -0.8,
        "canceling": -0.8,
        # Support-domain relief.
        "fixed": 1.2,
        "solved": 1.5,
        "resolved": 1.5,
        "worked": 1.0,
        "works": 0.5,
        # Tokens produced by _PHRASES.
        "cs_charged_twice": -2.2,
        "cs_not_fixed": -2.0,
        "cs_not_working": -2.0,
        "cs_cannot_login": -1.8,
        "cs_takes_forever": -1.8,
        "cs_still_waiting": -1.6,
        "cs_supposed_to": -1.0,
        "cs_where": -0.8,
        "cs_outage": -1.8,
        "cs_sarcasm": -2.0,
        "cs_ignored": -1.8,
        "cs_works_now": 2.0,
    }
)


def _compile(pattern: str) -> re.Pattern[str]:
    """Rules run on lower-cased text: case-insensitive matching is several times slower."""
    return re.compile(rf"\b(?:{pattern})\b")


_PHRASE_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (_compile(pattern), token) for pattern, token in _PHRASES
)

# --- topics and intents -----------------------------------------------------------------------

_TOPICS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, _compile(pattern))
    for label, pattern in (
        (
            "billing",
            r"bill(?:ing|ed)?|invoices?|charge[sd]?|charging|overcharged|payments?"
            r"|paid|card|receipt|transactions?|cs_charged_twice",
        ),
        ("refund", r"refund(?:s|ed)?|money back|reimburse\w*|chargeback"),
        (
            "login",
            r"log ?in|logging in|log-in|sign(?:ing)? ?in|password|locked out|2fa"
            r"|two[- ]factor|mfa|verification code|one[- ]time code|otp|sso|reset link",
        ),
        ("account", r"account|profile|username|user name|email address"),
        (
            "bug",
            r"bugs?|buggy|crash(?:es|ed|ing)?|errors?|broken|glitch(?:es|y)?"
            r"|freez(?:e|es|ing)|frozen|not working|(?:doesn't|does not|won't|didn't"
            r"|isn't|stopped) work(?:ing)?|fail(?:s|ed|ing|ure)?|exception"
            r"|blank (?:screen|page)|outage",
        ),
        (
            "outage",
            r"outage|downtime|(?:is|was|went|goes|been) down|service unavailable|503",
        ),
        (
            "performance",
            r"slow(?:ly|er|ness)?|lag(?:s|gy|ging)?|takes? forever|taking forever"
            r"|(?:spins|spinning|loads|loading) forever|keeps (?:spinning|loading)"
            r"|tim(?:ing|ed|es)? ?out|timeouts?|latency|sluggish|performance",
        ),
        (
            "shipping",
            r"ship(?:ping|ped|ment)?|deliver(?:y|ed|ies)?|my package|parcel|tracking"
            r"|courier|arriv(?:e|ed|al)|dispatch(?:ed)?|postage",
        ),
        ("order", r"(?<!in )orders?|order number|purchase[sd]?"),
        (
            "feature request",
            r"feature|would be (?:nice|great|helpful|awesome|good|useful) (?:if|to)"
            r"|please add|(?:could|can) you (?:please )?add|wish (?:it|you|there)"
            r"|any plans (?:to|for)|roadmap|suggestion|dark mode",
        ),
        (
            "cancellation",
            r"cancel(?:s|led|ling|lation)?|canceled|canceling|unsubscribe"
            r"|(?:close|delete) (?:my|our) account|terminate",
        ),
        (
            "subscription",
            r"subscription|subscribed|renew(?:al|ed|s)?|auto[- ]?renew\w*|trial"
            r"|membership",
        ),
        (
            "pricing",
            r"prices?|pricing|plans?|upgrade|downgrade|discount|coupon|promo(?: code)?"
            r"|costs?|expensive|cheaper|quote|tiers?",
        ),
        (
            "integration",
            r"integrat(?:e|es|ion|ions|ing)|api|webhooks?|zapier|slack|salesforce"
            r"|hubspot|shopify|sdk|oauth|endpoints?",
        ),
        ("data export", r"export(?:s|ed|ing)?|csv|download (?:my|all|our) data|backups?"),
        ("notifications", r"notifications?|alerts?|push messages?|reminder emails?"),
        (
            "security",
            r"hack(?:ed)?|security|breach|suspicious|fraud(?:ulent)?"
            r"|unauthori[sz]ed|phishing|compromised|scam (?:emails?|messages?|calls?|texts?)",
        ),
        ("privacy", r"gdpr|privacy|personal data|delete my data|data deletion|ccpa"),
        ("mobile app", r"ios|android|iphone|ipad|mobile app|play store|app store"),
    )
)

# Checked in this order; the first that matches the customer's opening, else their whole
# text, is the intent. Specific requests outrank generic problem reports.
_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, _compile(pattern))
    for label, pattern in (
        ("request_refund", r"refund|money back|reimburse\w*"),
        (
            "report_security_issue",
            r"hack(?:ed|er)|phishing|scam (?:email|message|call|text)|compromised"
            r"|unauthori[sz]ed (?:charge|access|login|payment|transaction)"
            r"|suspicious (?:email|login|activity|charge)|fraudulent",
        ),
        ("cancel_order", r"cancel(?:l?ing)? (?:my|the|this|an|our) order"),
        (
            "cancel_subscription",
            r"cancel(?:l?ing)? (?:my|the|our|this)? ?(?:subscription|account|plan|membership"
            r"|service|renewal)|unsubscribe|(?:close|delete) (?:my|our) account"
            r"|stop (?:the )?(?:auto[- ]?renew\w*|billing|subscription)"
            r"|(?:want|need|like|trying|try) to cancel|how (?:do|can) i cancel",
        ),
        (
            "billing_issue",
            r"cs_charged_twice|charged (?:twice|two times|double)|double[- ]?charged"
            r"|overcharged"
            r"|wrong (?:amount|charge|invoice)|unexpected charge|charged"
            r"|payment (?:failed|declined|didn't go through)|card (?:was )?declined",
        ),
        (
            "change_plan",
            r"(?:upgrade|downgrade|change|switch) (?:my |our |the |to (?:a |the )?)?"
            r"(?:\w+ )?(?:plan|tier)|upgrad(?:e|ing)|downgrad(?:e|ing)",
        ),
        (
            "update_billing_details",
            r"(?:update|change|remove|replace|add|delete) (?:my |the |a |our )?(?:new )?"
            r"(?:credit |debit )?"
            r"(?:card|payment (?:method|details)|billing (?:address|details|info\w*)|vat number)",
        ),
        (
            "account_access",
            r"(?:can't|cannot|can not|couldn't|unable to) (?:log ?in|sign ?in|access)"
            r"|locked out"
            r"|(?:forgot|reset|change|lost) (?:my )?password|password reset|2fa|two[- ]factor"
            r"|verification code|reset link",
        ),
        (
            "report_bug",
            r"bugs?|buggy|crash(?:es|ed|ing)?|errors?|broken|glitch(?:es|y)?|freez(?:e|es|ing)"
            r"|frozen|not working|(?:doesn't|does not|won't|didn't|isn't|stopped) work(?:ing)?"
            r"|fail(?:s|ed|ing)?|blank (?:screen|page)|outage|downtime|(?:is|was|went|been) down"
            r"|(?:are|is|shows?|showing) (?:wrong|incorrect)|(?:don't|doesn't) add up",
        ),
        (
            "report_performance_issue",
            r"slow(?:ly|er|ness)?|lag(?:s|gy|ging)?|takes? forever|taking forever|sluggish"
            r"|(?:spins|spinning|loads|loading) forever|keeps (?:spinning|loading)"
            r"|tim(?:ing|ed|es)? ?out",
        ),
        (
            "track_order",
            r"where(?:'s| is) my (?:order|package|parcel|delivery)|tracking|(?:hasn't|has not"
            r"|never|didn't|did not|not) (?:arrived|arrive|been delivered|shipped)"
            r"|deliver(?:y|ed)|shipping|shipped|parcel|my package|package (?:arrived|never)",
        ),
        (
            "request_data_deletion",
            r"(?:delete|erase|remove) (?:all )?(?:of )?my (?:personal )?(?:data|information)"
            r"|right to (?:be forgotten|erasure)|gdpr",
        ),
        (
            "request_feature",
            r"feature request|would be (?:nice|great|helpful|awesome|good|useful) (?:if|to)"
            r"|please add|(?:could|can) you (?:please )?add|wish (?:it|you|there)"
            r"|any plans (?:to|for)|roadmap|suggestion|dark mode",
        ),
    )
)

_QUESTION = _compile(
    r"how (?:do|can|does|to|much|long)|what(?:'s| is| are| does)|where (?:can|do|is)"
    r"|when (?:will|does|is)|is (?:it|there) (?:possible|a way)|can i|do you|does it"
    r"|(?:like|want|need) to know|wondering (?:if|whether)|curious (?:if|whether)"
)

# --- resolution ---------------------------------------------------------------------------------

_CUSTOMER_UNRESOLVED = _compile(
    r"still (?:not|doesn't|does not|isn't|won't|can't|cannot|broken|crashing|failing"
    r"|happening|waiting|the same|no)"
    r"|(?:didn't|did not|doesn't|does not|don't|do not|won't|isn't|aren't)"
    r" (?:work|working|help|fix|solve|load|sync)"
    r"|not (?:fixed|resolved|solved|working|helpful)"
    r"|(?:hasn't|has not|haven't|have not|wasn't|was not|isn't|is not) (?:been )?"
    r"(?:fixed|resolved|solved|refunded|processed)"
    r"|same (?:problem|issue|error)|nothing (?:changed|works|happened)"
    r"|no (?:luck|change|difference)|waste of time|useless|unacceptable"
    r"|(?:haven't|have not|never) (?:received|got|gotten)"
)
_CUSTOMER_RESOLVED = _compile(
    r"(?:that|this|it)(?: has|'s)? (?:worked|works|fixed it|did it|did the trick|helped"
    r"|solved it|sorted it)|works now|working (?:again|now)|(?:problem|issue|it)(?:'s| is"
    r"| has been| was)? (?:fixed|solved|resolved|sorted)|all (?:good|set|sorted)"
    r"|(?:can|could) (?:log ?in|sign ?in|access it|get in) (?:now|again)"
    r"|(?:got|received|see) (?:the|my) (?:refund|package|parcel|order|money)"
    r"|that's (?:great|perfect)|perfect,? thanks|problem solved|got it,? thanks"
    r"|that (?:helps|helped|answers)|makes sense,? thanks"
)
_AGENT_UNRESOLVED = _compile(
    r"escalat(?:e|ed|ing)|(?:forwarded|passed|handed) (?:this|it|your \w+)? ?(?:on )?to"
    r"|(?:we'll|we will|i'll|i will) (?:get back|follow up|look into|investigate|update you)"
    r"|(?:looking|look) into (?:this|it)|investigating|known (?:issue|bug)|working on a fix"
    r"|(?:unable|not able|can't|cannot) (?:to )?(?:refund|help|offer|issue|cancel|recover)"
    r"|ticket (?:number|#|has been (?:created|opened))"
)
_AGENT_RESOLVED = _compile(
    r"(?:i've|i have|we've|we have) (?:now )?(?:issued|processed|refunded|fixed|resolved|reset"
    r"|unlocked|cancell?ed|canceled|restored|corrected|reactivated|applied|credited|removed"
    r"|reversed|deleted)|(?:has|have) been (?:refunded|fixed|resolved|reset|unlocked|cancell?ed"
    r"|restored|processed|corrected|reactivated|issued|credited|reversed|deleted)|(?:is|are) now"
    r" (?:fixed|resolved|unlocked|restored|working|active)|refund (?:has been|was) "
    r"(?:issued|processed)"
)

# --- escalation ---------------------------------------------------------------------------------

_CUSTOMER_ESCALATION = _compile(
    r"(?:speak|talk|chat) (?:to|with) (?:a |an |your |the |some )?(?:real |actual |live )?"
    r"(?:human|person|people|manager|supervisor|someone in charge|representative|agent)"
    r"|(?:get|want|need|see|call|ask for|demand|give me|connect me (?:to|with)|transfer me to)"
    r" (?:a|an|your|the) (?:manager|supervisor|boss)|your (?:manager|supervisor|boss)"
    r"|escalate|real person|actual human"
    r"|lawyer|attorney|legal action|sue you|suing|lawsuit|small claims"
    r"|charge ?back|dispute (?:the|this|a) (?:charge|payment|transaction)"
    r"|(?:call|contact)(?:ing)? my bank|report(?:ing)? (?:you|this|your company)"
    r"|better business bureau|bbb|consumer protection|ombudsman|trading standards"
    r"|unacceptable|not acceptable|outrageous|formal complaint|scammed|scammers"
    r"|(?:is|a|total|complete|what a|it's|that's) scam"
    r"(?! (?:emails?|messages?|calls?|texts?|sites?|links?))|fraudsters?|you(?:'re| are) frauds?"
    r"|(?:file|lodge) a complaint|(?:bad|negative|1[- ]star|one[- ]star) review"
)
_ESCALATION_NEGATED = re.compile(
    r"\b(?:no|not|don't|dont|do not|never|no need to)\s+(?:\w+\s+){0,2}$"
)
# Negativity alone is mostly the problem being described ("error", "not arrived"); these are
# the customer's frustration with the service, which is what makes an open ticket urgent.
_FRUSTRATION = _compile(
    r"ridiculous|furious|angry|livid|terrible|horrible|awful|worst|useless|pathetic"
    r"|disgusting|disgraceful|a joke|fed up|sick (?:and tired )?of|frustrat\w*|annoy\w*"
    r"|disappoint\w*|unbelievable|incompetent|(?:second|third|fourth|fifth|\d+(?:st|nd|rd|th))"
    r" time|again and again|every single time|waste of (?:my )?time|nobody|no one"
)
_ANGRY_CANCEL = _compile(r"cancel (?:my|the|our) (?:account|subscription|plan|membership)")
_AGENT_ESCALATION = _compile(
    r"(?:transfer|connect|escalat\w*|hand(?:ing)? (?:you|this) over|put you through)"
    r"\W+(?:\w+\W+){0,5}?(?:human|agent|manager|supervisor|specialist|team lead|tier 2"
    r"|second[- ]line|colleague)"
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WHITESPACE = re.compile(r"\s+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


class LocalAnalyzer:
    """Rules plus VADER: deterministic, offline, about a millisecond per conversation.

    Holds one VADER analyser with its own copy of the lexicon (built here, not at import,
    because loading it costs ~15 ms). Nothing is mutated after construction, so concurrent
    `analyze` calls are safe.
    """

    name = ANALYZER_NAME
    model = MODEL_NAME
    version = ANALYSIS_VERSION

    def __init__(self) -> None:
        self._vader = SentimentIntensityAnalyzer()
        self._vader.lexicon = {**self._vader.lexicon, **_LEXICON_UPDATES}

    async def preflight(self) -> None:
        """Nothing can be misconfigured: no key, no network."""

    async def analyze(self, conversation: Conversation) -> Analysis:
        """Analyse inline (pure CPU, ~1 ms); a failure costs the conversation one attempt."""
        try:
            return self.analyze_sync(conversation)
        except Exception as exc:  # the protocol allows only its two errors out
            raise ConversationAnalysisError(
                f"local analyser failed on conversation {conversation.id}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def aclose(self) -> None:
        """Nothing to release: no network client."""

    def analyze_sync(self, conversation: Conversation) -> Analysis:
        """The whole analysis; exposed for callers and benchmarks without an event loop."""
        messages = [m for m in conversation.messages if m.content.strip()]
        from_customer = [m for m in messages if _is_customer(m)]
        customer = from_customer or messages
        usage = _usage(conversation.messages)
        if not customer:
            return _empty_analysis(usage)

        texts = [_normalise(m.content) for m in customer]
        score = self._sentiment_score(texts)
        opening, whole = texts[0], " ".join(texts)
        said = [m.content for m in customer]
        resolution = _resolution(messages[-RESOLUTION_WINDOW:], roles_known=bool(from_customer))
        topics = _topics(whole)
        return Analysis(
            summary=_summary(said, len(messages), len(from_customer), topics, resolution),
            sentiment=_sentiment_label(score),
            sentimentScore=score,
            topics=topics,
            intent=_intent(opening, whole, score),
            resolution=resolution,
            escalationNeeded=_escalation_needed(whole, messages, score, resolution),
            analyzer=ANALYZER_NAME,
            model=MODEL_NAME,
            promptVersion=RULES_VERSION,
            analysisVersion=ANALYSIS_VERSION,
            usage=usage,
        )

    def _sentiment_score(self, texts: Sequence[str]) -> float:
        """Weighted mean of the per-message scores that carry any sentiment.

        Neutral messages ("hi", "order #123") are left out so they do not dilute the one
        that matters; the last scored message counts double because where the customer
        ended up says more than where they started.
        """
        scores = [s for s in (self._message_score(t) for t in texts) if s != 0.0]
        if not scores:
            return 0.0
        weights = [1.0] * (len(scores) - 1) + [2.0]
        mean = sum(w * s for w, s in zip(weights, scores, strict=True)) / sum(weights)
        return round(max(-1.0, min(1.0, mean)), 4)

    def _message_score(self, text: str) -> float:
        """VADER's compound for the whole message, computed sentence by sentence.

        Per sentence keeps VADER's cost linear and its "but" rule local; summing the
        un-normalised sentence valences (rather than averaging compounds) keeps "This is
        ridiculous. It's down. Cancel my account." as negative as the whole text reads.
        """
        chunks = _chunks(_rewrite_phrases(text))
        raw = sum(_raw_valence(self._vader.polarity_scores(c)["compound"]) for c in chunks)
        return vader_normalize(raw, alpha=VADER_ALPHA)


def _raw_valence(compound: float) -> float:
    """Invert VADER's normalisation x / sqrt(x² + alpha) so sentence scores can be added."""
    bounded = max(-0.9999, min(0.9999, compound))
    return bounded * math.sqrt(VADER_ALPHA / (1.0 - bounded * bounded))


def _is_customer(message: Message) -> bool:
    return message.role.strip().lower() in CUSTOMER_ROLES


def _normalise(text: str) -> str:
    """What every rule reads: lower case, one spelling of apostrophes, bounded length.

    Lower-casing also drops VADER's ALL-CAPS emphasis; a small loss for rules that can
    then match without re.IGNORECASE.
    """
    return text[:MAX_MESSAGE_CHARS].translate(_APOSTROPHES).lower().strip()


def _rewrite_phrases(text: str) -> str:
    for pattern, token in _PHRASE_RULES:
        text = pattern.sub(token, text)
    return text


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s.strip()]


def _chunks(text: str) -> Iterable[str]:
    """Sentences, with overlong ones cut so VADER's per-text cost stays bounded."""
    for sentence in _sentences(text):
        words = sentence.split()
        for start in range(0, len(words), CHUNK_WORDS):
            yield " ".join(words[start : start + CHUNK_WORDS])


def _sentiment_label(score: float) -> Sentiment:
    if score >= POSITIVE_THRESHOLD:
        return "positive"
    if score <= NEGATIVE_THRESHOLD:
        return "negative"
    return "neutral"


def _topics(text: str) -> list[str]:
    """Up to MAX_TOPICS labels, most mentioned first (ties in rule order); `general` if none."""
    hits = [
        (len(pattern.findall(text)), index, label) for index, (label, pattern) in enumerate(_TOPICS)
    ]
    found = sorted((-count, index, label) for count, index, label in hits if count)
    return [label for _, _, label in found[:MAX_TOPICS]] or ["general"]


def _intent(opening: str, whole: str, score: float) -> str:
    """The customer's opening usually states the purpose; fall back to all they wrote."""
    for text in (opening, whole):
        for label, pattern in _INTENTS:
            if pattern.search(text):
                return label
    if _has_escalation_language(whole):
        return "request_escalation"
    if score <= COMPLAINT_SCORE:
        return "complaint"
    if "?" in whole or _QUESTION.search(whole):
        return "ask_question"
    if score >= FEEDBACK_SCORE:
        return "give_feedback"
    return "general_inquiry"


def _resolution(tail: Sequence[Message], roles_known: bool) -> Resolution:
    """The latest clear signal in the last messages wins; `unknown` when there is none.

    Without customer roles nobody can be told apart, so every message gets both rule sets.
    """
    for message in reversed(tail):
        if not roles_known:
            rules = (_CUSTOMER_UNRESOLVED, _AGENT_UNRESOLVED), (_CUSTOMER_RESOLVED, _AGENT_RESOLVED)
        elif _is_customer(message):
            rules = (_CUSTOMER_UNRESOLVED,), (_CUSTOMER_RESOLVED,)
        else:
            rules = (_AGENT_UNRESOLVED,), (_AGENT_RESOLVED,)
        signal = _message_resolution(_normalise(message.content), *rules)
        if signal is not None:
            return signal
    return "unknown"


def _message_resolution(
    text: str, unresolved: Sequence[re.Pattern[str]], resolved: Sequence[re.Pattern[str]]
) -> Resolution | None:
    for sentence in reversed(_sentences(text)):
        if any(p.search(sentence) for p in unresolved):
            return "unresolved"
        # "Is it fixed now?" asks; it does not report.
        if not sentence.endswith("?") and any(p.search(sentence) for p in resolved):
            return "resolved"
    return None


def _has_escalation_language(text: str) -> bool:
    """Explicit demands for a person, legal or payment threats; "no need for a manager" is not."""
    return any(
        not _ESCALATION_NEGATED.search(text[max(0, match.start() - 40) : match.start()])
        for match in _CUSTOMER_ESCALATION.finditer(text)
    )


def _escalation_needed(
    whole: str,
    messages: Sequence[Message],
    score: float,
    resolution: Resolution,
) -> bool:
    if _has_escalation_language(whole):
        return True
    if score <= ANGRY_CANCEL_SCORE and _ANGRY_CANCEL.search(whole):
        return True
    if score <= ESCALATION_SCORE and resolution == "unresolved" and _FRUSTRATION.search(whole):
        return True
    return any(
        _AGENT_ESCALATION.search(_normalise(m.content)) for m in messages if not _is_customer(m)
    )


def _summary(
    said: Sequence[str],
    n_messages: int,
    n_customer: int,
    topics: Sequence[str],
    resolution: Resolution,
) -> str:
    """The customer's own opening words plus counts: extractive, so nothing is invented."""
    excerpt = _excerpt(" / ".join(text.strip() for text in said), SUMMARY_EXCERPT_CHARS)
    messages = "message" if n_messages == 1 else "messages"
    who, whose = (
        ("Customer", f"{n_customer} from the customer")
        if n_customer
        else ("Conversation", "no customer role")
    )
    return (
        f'{who}: "{excerpt}" ({n_messages} {messages}, {whose}; '
        f"topics: {', '.join(topics)}; resolution: {resolution})."
    )


def _excerpt(text: str, limit: int) -> str:
    flat = _WHITESPACE.sub(" ", text).strip()
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0] if " " in flat[:limit] else flat[:limit]
    return cut.rstrip(" ,;:.") + "…"


def _usage(messages: Sequence[Message]) -> TokenUsage:
    """Approximate: whitespace-separated words of the input; nothing is generated or billed."""
    words = sum(len(m.content.split()) for m in messages)
    return TokenUsage(promptTokens=words, completionTokens=0, cachedTokens=0, totalTokens=words)


def _empty_analysis(usage: TokenUsage) -> Analysis:
    return Analysis(
        summary="Empty conversation: no message has any text.",
        sentiment="neutral",
        sentimentScore=0.0,
        topics=["general"],
        intent="unknown",
        resolution="unknown",
        escalationNeeded=False,
        analyzer=ANALYZER_NAME,
        model=MODEL_NAME,
        promptVersion=RULES_VERSION,
        analysisVersion=ANALYSIS_VERSION,
        usage=usage,
    )
