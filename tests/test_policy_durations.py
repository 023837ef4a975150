"""Durations in policies: the Prometheus grammar, read exactly, refused clearly."""

from __future__ import annotations

from datetime import timedelta

import pytest

from healer.policy.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("1m500ms", timedelta(minutes=1, milliseconds=500)),
        ("0", timedelta(0)),
        ("0s", timedelta(0)),
        (" 3m ", timedelta(minutes=3)),
    ],
)
def test_durations_read_as_written(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("5", "write a whole number and a unit"),
        ("5 m", "write a whole number and a unit"),
        ("1.5h", "write a whole number and a unit"),
        ("-5m", "write a whole number and a unit"),
        ("1y", "write a whole number and a unit"),
        ("m5", "write a whole number and a unit"),
        ("", "empty duration"),
        ("30s1m", "units must go from largest to smallest, each once"),
        ("1m1m", "units must go from largest to smallest, each once"),
    ],
)
def test_bad_durations_say_why(text: str, reason: str) -> None:
    with pytest.raises(DurationError, match=reason):
        parse_duration(text)


@pytest.mark.parametrize("text", ["90s", "1h30m", "1d2h", "1m500ms", "2w"])
def test_formatting_reads_back_to_the_same_duration(text: str) -> None:
    value = parse_duration(text)

    assert parse_duration(format_duration(value)) == value


def test_ninety_seconds_formats_as_minutes_and_seconds() -> None:
    assert format_duration(timedelta(seconds=90)) == "1m30s"


@pytest.mark.parametrize(
    "text", ["99999999999999999999999h", "9999999999w", "521w", "3641d", "1" * 5000 + "s"]
)
def test_durations_longer_than_ten_years_are_refused_as_too_long(text: str) -> None:
    with pytest.raises(DurationError, match="too long: at most 520w"):
        parse_duration(text)


def test_ten_years_exactly_is_the_longest_duration_read() -> None:
    assert parse_duration("520w") == timedelta(weeks=520)
    assert parse_duration("519w6d23h59m59s999ms") == timedelta(weeks=520) - timedelta(
        milliseconds=1
    )


def test_a_too_long_duration_is_a_validation_error_of_the_field_that_holds_it() -> None:
    from pydantic import BaseModel, ValidationError

    from healer.policy.durations import Duration

    class Holder(BaseModel):
        wait: Duration

    with pytest.raises(ValidationError, match="too long"):
        Holder.model_validate({"wait": "99999999999999999999999h"})
