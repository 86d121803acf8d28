"""The offline analyser makes the calls a person reading the conversation would make.

Each case is a hand-written support conversation with the labels a reader would give it; a
`None` expectation means "a reader could go either way", so it is not pinned.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from convsync_pipeline.analyzers import local
from convsync_pipeline.analyzers.local import LocalAnalyzer
from convsync_pipeline.core.analysis import (
    PROMPT_VERSION,
    Analysis,
    Analyzer,
    ConversationAnalysisError,
)
from convsync_pipeline.core.document import Conversation, Message

Turn = tuple[str, str]


def conversation(*turns: Turn, conversation_id: str = "c1") -> Conversation:
    return Conversation(
        id=conversation_id,
        startedAt="2026-02-11T14:03:00.000Z",
        endedAt="2026-02-11T14:20:00.000Z",
        messages=[
            Message(role=role, content=content, timestamp=f"2026-02-11T14:{3 + i:02d}:00.000Z")
            for i, (role, content) in enumerate(turns)
        ],
        source="incoming/2026-02-11.csv",
        processingStatus="pending",
    )


@pytest.fixture(scope="module")
def analyzer() -> LocalAnalyzer:
    return LocalAnalyzer()


def analyze(analyzer: LocalAnalyzer, conv: Conversation) -> Analysis:
    return asyncio.run(analyzer.analyze(conv))


def said(analyzer: LocalAnalyzer, text: str) -> Analysis:
    return analyze(analyzer, conversation(("user", text)))


# --- the obvious calls from the brief ---


def test_crashing_app_is_negative_bug_report(analyzer: LocalAnalyzer) -> None:
    result = said(analyzer, "The app keeps crashing when I upload photos")
    assert result.sentiment == "negative"
    assert result.sentimentScore < -0.3
    assert result.intent == "report_bug"
    assert "bug" in result.topics


def test_praise_is_positive_feedback(analyzer: LocalAnalyzer) -> None:
    result = said(analyzer, "the new dashboard is great!")
    assert result.sentiment == "positive"
    assert result.intent == "give_feedback"
    assert result.escalationNeeded is False


def test_courtesy_is_not_positive(analyzer: LocalAnalyzer) -> None:
    assert said(analyzer, "please fix it").sentiment != "positive"
    assert said(analyzer, "Can you help me, please?").sentiment == "neutral"
    # Gratitude is still mildly positive, just not enthusiasm.
    thanks = said(analyzer, "thanks")
    assert 0.0 < thanks.sentimentScore < 0.4


def test_asking_for_a_manager_is_an_escalation(analyzer: LocalAnalyzer) -> None:
    result = said(analyzer, "I need to talk to a manager")
    assert result.escalationNeeded is True
    assert result.intent == "request_escalation"


@pytest.mark.parametrize(
    "text",
    [
        "Let me speak to a real person, this bot is useless.",
        "If this isn't fixed today I'm filing a chargeback.",
        "My lawyer will hear about this.",
        "This is unacceptable.",
        "Put your supervisor on the line.",
    ],
)
def test_explicit_escalation_language(analyzer: LocalAnalyzer, text: str) -> None:
    assert said(analyzer, text).escalationNeeded is True


@pytest.mark.parametrize(
    "text",
    [
        "No need to escalate, I just want to know when the outage ends.",
        "I got a scam email pretending to be from you.",
        "Hi there, I'm a manager at Acme and want to add 5 seats.",
        "Our account manager said the invoice would be sent on Monday.",
        "Does the Pro plan include a password manager?",
    ],
)
def test_words_that_only_look_like_escalation(analyzer: LocalAnalyzer, text: str) -> None:
    assert said(analyzer, text).escalationNeeded is False


# --- realistic conversations ---


@dataclass(frozen=True)
class Case:
    name: str
    turns: tuple[Turn, ...]
    sentiment: set[str] | None
    intent: str
    topics: set[str]
    resolution: str
    escalation: bool


CASES = (
    Case(
        "crash_handed_to_engineering",
        (
            ("user", "Hi, the app keeps crashing whenever I try to upload photos from my gallery."),
            ("agent", "Sorry about that! Which version of the app are you on?"),
            ("user", "Version 4.2.1 on Android 14. I already reinstalled it twice."),
            (
                "agent",
                "Thanks. I've passed this on to our engineering team and we'll get back "
                "to you as soon as we know more.",
            ),
        ),
        sentiment={"negative"},
        intent="report_bug",
        topics={"bug"},
        resolution="unresolved",
        escalation=False,
    ),
    Case(
        "double_charge_refunded",
        (
            (
                "customer",
                "I was charged twice for my March invoice. Can you refund one of the payments?",
            ),
            (
                "agent",
                "I'm sorry for the trouble. I've issued a refund for the duplicate charge; "
                "it will show up in 3-5 business days.",
            ),
            ("customer", "Great, thank you so much!"),
        ),
        sentiment={"neutral", "positive"},
        intent="request_refund",
        topics={"billing", "refund"},
        resolution="resolved",
        escalation=False,
    ),
    Case(
        "locked_out_then_fixed",
        (
            (
                "user",
                "I can't log in to my account, it says my password is wrong but I just reset it.",
            ),
            ("agent", "I've unlocked your account and sent you a new reset link."),
            ("user", "Thanks, that worked. I'm in now."),
        ),
        sentiment=None,
        intent="account_access",
        topics={"login"},
        resolution="resolved",
        escalation=False,
    ),
    Case(
        "third_contact_wants_manager",
        (
            ("user", "This is the third time I'm contacting you about the same problem."),
            ("agent", "I understand, let me check your ticket."),
            ("user", "No. I need to talk to a manager, now."),
        ),
        sentiment={"negative"},
        intent="request_escalation",
        topics={"general"},
        resolution="unresolved",
        escalation=True,
    ),
    Case(
        "charged_after_cancelling_threatens_lawyer",
        (
            (
                "client",
                "You charged my card again after I cancelled. If this isn't reversed by "
                "Friday I'll file a chargeback and contact my lawyer.",
            ),
        ),
        sentiment={"negative"},
        intent="billing_issue",
        topics={"billing", "cancellation"},
        resolution="unknown",
        escalation=True,
    ),
    Case(
        "feature_request_logged",
        (
            (
                "user",
                "Love the product! Would be great if you could add a dark mode for the editor.",
            ),
            ("agent", "Thanks for the suggestion, I've shared it with our product team."),
        ),
        sentiment={"positive"},
        intent="request_feature",
        topics={"feature request"},
        resolution="unknown",
        escalation=False,
    ),
    Case(
        "late_delivery_being_chased",
        (
            (
                "customer",
                "Where is my order? It was supposed to arrive last week and the "
                "tracking hasn't updated in 5 days.",
            ),
            (
                "agent",
                "I'm sorry about the delay. I've contacted the courier and I will update "
                "you within 24 hours.",
            ),
        ),
        sentiment={"negative"},
        intent="track_order",
        topics={"shipping", "order"},
        resolution="unresolved",
        escalation=False,
    ),
    Case(
        "calm_cancellation_done",
        (
            ("user", "Hi, I'd like to cancel my subscription at the end of this billing period."),
            ("agent", "Done: I've cancelled your subscription, you keep access until 30 April."),
            ("user", "Perfect, thanks."),
        ),
        sentiment={"neutral", "positive"},
        intent="cancel_subscription",
        topics={"cancellation", "subscription"},
        resolution="resolved",
        escalation=False,
    ),
    Case(
        "angry_cancellation",
        (
            (
                "visitor",
                "This is ridiculous. Your app has been down all day and nobody answers. "
                "Cancel my account now.",
            ),
        ),
        sentiment={"negative"},
        intent="cancel_subscription",
        topics={"cancellation"},
        resolution="unknown",
        escalation=True,
    ),
    Case(
        "slow_dashboard_known_issue",
        (
            (
                "user",
                "Since yesterday's update the dashboard takes forever to load, sometimes "
                "over a minute.",
            ),
            ("agent", "We're aware of it and our team is working on a fix."),
        ),
        sentiment={"negative"},
        intent="report_performance_issue",
        topics={"performance"},
        resolution="unresolved",
        escalation=False,
    ),
    Case(
        "how_to_export_answered",
        (
            ("user", "How do I export my contacts to CSV?"),
            ("agent", "Go to Settings > Data > Export and choose CSV."),
            ("user", "Got it, thanks!"),
        ),
        sentiment={"neutral", "positive"},
        intent="ask_question",
        topics={"data export"},
        resolution="resolved",
        escalation=False,
    ),
    Case(
        "webhook_errors_persist",
        (
            (
                "user",
                "Our webhook integration started returning 401 errors after we rotated "
                "the API key.",
            ),
            ("agent", "Could you check that the new key is set in the Authorization header?"),
            ("user", "It is. Still failing with the same error."),
        ),
        sentiment={"negative"},
        intent="report_bug",
        topics={"integration", "bug"},
        resolution="unresolved",
        escalation=False,
    ),
    Case(
        "pricing_question",
        (
            (
                "user",
                "What's the difference between the Pro and Business plans? Is there a "
                "discount for annual billing?",
            ),
        ),
        sentiment={"neutral"},
        intent="ask_question",
        topics={"pricing"},
        resolution="unknown",
        escalation=False,
    ),
    Case(
        "bot_user_wants_human",
        (
            ("visitor", "hello"),
            ("assistant", "Hi! How can I help you today?"),
            ("visitor", "I want to speak to a real person, your bot is useless."),
        ),
        sentiment={"negative"},
        intent="request_escalation",
        topics={"general"},
        resolution="unresolved",
        escalation=True,
    ),
    Case(
        "gdpr_deletion_done",
        (
            ("user", "Please delete all my personal data under GDPR."),
            ("agent", "Your data has been deleted and you'll receive a confirmation email."),
        ),
        sentiment={"neutral"},
        intent="request_data_deletion",
        topics={"privacy"},
        resolution="resolved",
        escalation=False,
    ),
    Case(
        "blank_screen_fix_failed",
        (
            ("user", "The invoices page shows a blank screen."),
            ("agent", "This should be fixed now, could you refresh?"),
            ("user", "I refreshed, it's still not working. This is unacceptable, we pay for this."),
        ),
        sentiment={"negative"},
        intent="report_bug",
        topics={"bug", "billing"},
        resolution="unresolved",
        escalation=True,
    ),
    Case(
        "thanks_before_trying",
        (
            ("user", "The sync between my phone and laptop stopped working yesterday."),
            ("agent", "Try signing out and back in on both devices."),
            ("user", "Thanks, I'll try that."),
        ),
        sentiment={"negative", "neutral"},
        intent="report_bug",
        topics={"bug"},
        resolution="unknown",
        escalation=False,
    ),
    Case(
        "upgrade_plan",
        (
            ("user", "I would like to upgrade to the Business plan for my team of 12."),
            ("agent", "Sure! I've applied the upgrade, your invoice will be prorated."),
            ("user", "Thank you."),
        ),
        sentiment={"neutral", "positive"},
        intent="change_plan",
        topics={"pricing"},
        resolution="resolved",
        escalation=False,
    ),
    Case(
        "refund_refused_angry",
        (
            ("customer", "I want my money back. The product never worked and you knew it."),
            ("agent", "I'm afraid we are unable to refund annual plans after 30 days."),
            ("customer", "That's a scam. Terrible service, I'm disputing the charge with my bank."),
        ),
        sentiment={"negative"},
        intent="request_refund",
        topics={"refund"},
        resolution="unresolved",
        escalation=True,
    ),
    Case(
        "hacked_account",
        (
            ("user", "Someone hacked my account and changed the email address. I'm locked out!"),
            ("agent", "I've locked the account and reset your credentials; check your inbox."),
            ("user", "I can log in again, thank you!"),
        ),
        sentiment=None,
        intent="report_security_issue",
        topics={"security", "account", "login"},
        resolution="resolved",
        escalation=False,
    ),
    Case(
        "fix_worked_but_new_problem",
        (
            ("user", "The app crashes when I open the calendar."),
            ("agent", "Please update to version 4.3, it contains a fix."),
            ("user", "That fixed the crash, but now notifications don't work."),
        ),
        sentiment={"negative"},
        intent="report_bug",
        topics={"bug", "notifications"},
        resolution="unresolved",
        escalation=False,
    ),
    Case(
        "polite_sso_question",
        (
            (
                "user",
                "Good morning! I hope you're well. I would like to know if you support SSO "
                "with Okta. Kind regards, Anna",
            ),
        ),
        sentiment={"neutral"},
        intent="ask_question",
        topics={"login"},
        resolution="unknown",
        escalation=False,
    ),
    Case(
        "site_down_third_time",
        (
            ("user", "The website is down again!!! This is the third time this week."),
            ("agent", "We're investigating the outage right now."),
        ),
        sentiment={"negative"},
        intent="report_bug",
        topics={"outage"},
        resolution="unresolved",
        escalation=True,
    ),
    Case(
        "bot_hands_over_failed_payment",
        (
            ("visitor", "my payment failed"),
            ("bot", "I'll transfer you to a human agent now."),
        ),
        sentiment={"negative"},
        intent="billing_issue",
        topics={"billing"},
        resolution="unknown",
        escalation=True,
    ),
    Case(
        # A bare "thank you" after an answer could be relief or politeness: not claimed.
        "bare_thanks_is_unclear",
        (
            ("user", "How do I change my email address?"),
            ("agent", "Go to Settings > Profile > Email."),
            ("user", "Thank you!"),
        ),
        sentiment={"neutral", "positive"},
        intent="ask_question",
        topics={"account"},
        resolution="unknown",
        escalation=False,
    ),
)


@pytest.mark.parametrize(
    ("text", "sentiment", "intent"),
    [
        ("ok", "neutral", "general_inquiry"),
        ("I need help", "neutral", "general_inquiry"),
        ("Thanks for nothing.", "negative", "complaint"),
        ("I got a scam email pretending to be from you.", "negative", "report_security_issue"),
        ("Please remove my credit card from my account.", "neutral", "update_billing_details"),
        ("Can I get an invoice for last month?", "neutral", "ask_question"),
        ("The login page just spins forever.", "negative", "report_performance_issue"),
        ("My card was declined when I tried to pay.", "negative", "billing_issue"),
        ("I want to downgrade to the free plan.", "neutral", "change_plan"),
        ("Is there a way to integrate with Slack?", "neutral", "ask_question"),
        ("I'm not sure how to export my data.", "neutral", "ask_question"),
        (
            "Your support is amazing, thank you for fixing it so quickly!",
            "positive",
            "give_feedback",
        ),
        (
            "I love the app but the sync is really slow lately.",
            "negative",
            "report_performance_issue",
        ),
    ],
)
def test_one_liners(analyzer: LocalAnalyzer, text: str, sentiment: str, intent: str) -> None:
    result = said(analyzer, text)
    assert (result.sentiment, result.intent) == (sentiment, intent), result.sentimentScore


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_realistic_conversations(analyzer: LocalAnalyzer, case: Case) -> None:
    result = analyze(analyzer, conversation(*case.turns))
    if case.sentiment is not None:
        assert result.sentiment in case.sentiment, result.sentimentScore
    assert result.intent == case.intent
    assert case.topics <= set(result.topics), result.topics
    assert result.resolution == case.resolution
    assert result.escalationNeeded is case.escalation


# --- resolution details ---


def test_customer_reopening_after_agent_fix_is_unresolved(analyzer: LocalAnalyzer) -> None:
    result = analyze(
        analyzer,
        conversation(
            ("user", "Export to PDF fails every time."),
            ("agent", "I've fixed the export template on our side."),
            ("user", "Still doesn't work, same error."),
        ),
    )
    assert result.resolution == "unresolved"


def test_a_question_about_a_fix_is_not_a_fix(analyzer: LocalAnalyzer) -> None:
    result = analyze(
        analyzer,
        conversation(("user", "My reports are empty."), ("user", "Is it fixed yet?")),
    )
    assert result.resolution == "unknown"


def test_strongly_negative_and_unresolved_needs_a_person(analyzer: LocalAnalyzer) -> None:
    result = analyze(
        analyzer,
        conversation(
            ("user", "Your terrible app deleted all my notes. I'm furious, weeks of work lost!"),
            ("agent", "I'm sorry, we are unable to recover deleted notes."),
        ),
    )
    assert result.sentimentScore <= local.ESCALATION_SCORE
    assert result.resolution == "unresolved"
    assert result.escalationNeeded is True


# --- roles ---


def test_sentiment_reads_the_customer_not_the_agent(analyzer: LocalAnalyzer) -> None:
    result = analyze(
        analyzer,
        conversation(
            ("agent", "Hello! Wonderful to hear from you, we love helping our amazing customers!"),
            ("user", "My order arrived broken."),
        ),
    )
    assert result.sentiment == "negative"


def test_without_customer_roles_every_message_is_read(analyzer: LocalAnalyzer) -> None:
    result = analyze(
        analyzer,
        conversation(
            ("speaker_a", "The export keeps failing with an error."),
            ("speaker_b", "I've fixed the export job, please try again."),
            ("speaker_a", "It works now, thanks!"),
        ),
    )
    assert result.intent == "report_bug"
    assert result.resolution == "resolved"
    assert "data export" in result.topics


def test_roles_are_matched_case_insensitively(analyzer: LocalAnalyzer) -> None:
    result = analyze(
        analyzer,
        conversation(
            ("Agent", "Everything is wonderful and amazing!"),
            (" Customer ", "The checkout page is broken."),
        ),
    )
    assert result.sentiment == "negative"


# --- contract: shape, provenance, determinism, empties ---


def test_satisfies_the_analyzer_protocol() -> None:
    analyzer: Analyzer = LocalAnalyzer()
    assert analyzer.name == "local"
    assert "local" in analyzer.model
    asyncio.run(analyzer.aclose())


def test_output_validates_and_carries_provenance(analyzer: LocalAnalyzer) -> None:
    conv = conversation(*CASES[1].turns)
    result = analyze(analyzer, conv)
    assert Analysis.model_validate_json(result.model_dump_json()) == result
    assert result.analyzer == "local"
    assert result.model == local.MODEL_NAME
    assert result.promptVersion == PROMPT_VERSION
    assert 1 <= len(result.topics) <= local.MAX_TOPICS
    assert all(topic == topic.lower() and topic.strip() for topic in result.topics)
    assert result.intent.isidentifier() and result.intent == result.intent.lower()
    words = sum(len(m.content.split()) for m in conv.messages)
    assert result.usage.promptTokens == words
    assert result.usage.completionTokens == 0
    assert result.usage.totalTokens == words


def test_same_conversation_same_analysis() -> None:
    conv = conversation(*CASES[0].turns)
    first = asyncio.run(LocalAnalyzer().analyze(conv))
    second = asyncio.run(LocalAnalyzer().analyze(conv.model_copy(deep=True)))
    assert first.model_dump() == second.model_dump()


def test_concurrent_calls_agree(analyzer: LocalAnalyzer) -> None:
    convs = [conversation(*case.turns, conversation_id=case.name) for case in CASES]

    async def run_all() -> list[Analysis]:
        return await asyncio.gather(*(analyzer.analyze(c) for c in convs))

    together = asyncio.run(run_all())
    one_by_one = [analyze(analyzer, c) for c in convs]
    assert together == one_by_one


def test_summary_is_extractive_and_short(analyzer: LocalAnalyzer) -> None:
    opening = "I was charged twice for my March invoice."
    result = analyze(analyzer, conversation(("user", opening), ("agent", "Let me check.")))
    assert opening in result.summary
    assert "2 messages, 1 from the customer" in result.summary

    long_text = "word " * 500
    result = said(analyzer, long_text)
    assert len(result.summary) < local.SUMMARY_EXCERPT_CHARS + 120
    assert "…" in result.summary


@pytest.mark.parametrize("turns", [(), (("user", ""), ("agent", "   \n"))])
def test_empty_conversation_gets_a_neutral_unknown_analysis(
    analyzer: LocalAnalyzer, turns: tuple[Turn, ...]
) -> None:
    result = analyze(analyzer, conversation(*turns))
    assert result.sentiment == "neutral"
    assert result.sentimentScore == 0.0
    assert result.resolution == "unknown"
    assert result.escalationNeeded is False
    assert result.topics == ["general"]
    assert result.usage.promptTokens == 0


def test_internal_failure_is_a_conversation_error(
    analyzer: LocalAnalyzer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(text: str) -> list[str]:
        raise ValueError("rule table is broken")

    monkeypatch.setattr(local, "_topics", broken)
    with pytest.raises(ConversationAnalysisError, match=r"c1.*rule table is broken"):
        said(analyzer, "anything")


def test_vader_shipped_lexicon_is_not_modified() -> None:
    LocalAnalyzer()
    pristine = SentimentIntensityAnalyzer()
    assert pristine.lexicon["please"] == 1.3
    assert "crashing" not in pristine.lexicon


# --- speed sanity (no timing assertions: a quadratic blow-up would show as a hang) ---


def test_huge_and_many_conversations_finish(analyzer: LocalAnalyzer) -> None:
    log_dump = "ERROR timeout while syncing item " * 5_000  # 25k words, no sentence breaks
    result = said(analyzer, f"Sync is broken, here is the log: {log_dump}")
    assert result.intent == "report_bug"
    assert result.sentiment == "negative"

    convs = [conversation(*CASES[i % len(CASES)].turns) for i in range(300)]
    results = [analyzer.analyze_sync(c) for c in convs]
    assert len(results) == 300
