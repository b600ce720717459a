"""Dead-letter reasons become a handful of label values, never free text (issue #15)."""

from __future__ import annotations

from app.metrics import dead_letter_class, short_topic


def test_reason_classes_drop_the_free_text_after_the_colon() -> None:
    assert dead_letter_class("invalid JSON: unexpected character at 3") == "invalid JSON"
    assert dead_letter_class("internal error: KeyError('x')") == "internal error"
    assert dead_letter_class("unknown project") == "unknown project"
    assert dead_letter_class("invalid event") == "invalid event"
    assert dead_letter_class("scoring failed: KeyError: 'x'") == "scoring failed"
    assert dead_letter_class("not a lead change: ValueError('x')") == "not a lead change"
    assert dead_letter_class("cannot be written to MongoDB: WriteError: x") == (
        "cannot be written to MongoDB"
    )
    assert dead_letter_class("something nobody foresaw: lead 42") == "other"
    assert dead_letter_class("lead 42 of prj_x failed: x") == "other"


def test_topics_are_labelled_without_the_deployment_prefix() -> None:
    assert short_topic("it1234.events", "it1234") == "events"
    assert short_topic("it1234.lead-commands", "it1234") == "lead-commands"
    assert short_topic("other.events", "it1234") == "other.events"
