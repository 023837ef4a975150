"""The payload models: documented names, extra fields kept, odd states kept, numbers exact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from healer.cloudpilot.models import (
    DISRUPTIVE_ACTIONS,
    Action,
    ActionResult,
    InstanceInfo,
    InstanceStatus,
    exact_decimal,
    normalize_state,
)


class TestStatesAreKeptAsTheyCome:
    def test_destroy_is_read_as_the_apis_destory(self) -> None:
        status = InstanceStatus.model_validate(
            {"status_instance_top_five": {"DESTROY": {"value": 2, "top_five_list": ["a", "b"]}}}
        )

        assert list(status.status_instance_top_five) == ["DESTORY"]
        assert normalize_state("DESTORY") == "DESTORY"

    def test_an_unknown_state_is_kept_as_itself_with_its_count(self) -> None:
        status = InstanceStatus.model_validate(
            {"status_instance_top_five": {"HIBERNATING": {"value": 3, "top_five_list": ["x"]}}}
        )

        assert status.status_instance_top_five["HIBERNATING"].value == 3
        assert status.status_instance_top_five["HIBERNATING"].top_five_list == ["x"]


class TestFieldsAreTheApisOwn:
    def test_bsn_disabled_keeps_its_spelling_and_unknown_fields_are_kept(self) -> None:
        info = InstanceInfo.model_validate(
            {"instance_id": "a.0", "bsn_disabled": True, "rack": "r7", "weight": 0.5}
        )

        assert info.bsn_disabled is True
        assert info.model_extra == {"rack": "r7", "weight": 0.5}
        assert info.model_dump()["rack"] == "r7"

    def test_an_instance_without_an_id_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="instance_id"):
            InstanceInfo.model_validate({"host_ip": "127.0.0.1"})


class TestActionResults:
    def test_requested_instances_named_in_neither_list_are_unknown(self) -> None:
        result = ActionResult.model_validate({"success_instances": ["a"], "failed_instances": None})

        filled = result.with_requested(["a", "b", "c"])

        assert filled.failed_instances == []
        assert filled.unknown_instances == ["b", "c"]
        assert "unknown_instances" not in filled.model_dump()

    def test_the_disruptive_actions_are_the_six_of_the_design(self) -> None:
        assert {a.value for a in DISRUPTIVE_ACTIONS} == {
            "restart",
            "migrate",
            "stop",
            "delete",
            "repair",
            "disable",
        }
        assert len(Action) == 10


class TestExactDecimal:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (0.14, Decimal("0.14")),
            (Decimal("80.5"), Decimal("80.5")),
            (7, Decimal(7)),
            (" 60 ", Decimal(60)),
            ("1e2", Decimal(100)),
        ],
    )
    def test_numbers_are_read_exactly(self, value: object, expected: Decimal) -> None:
        assert exact_decimal(value) == expected

    def test_fourteen_percent_of_fifty_is_exactly_seven(self) -> None:
        # In floating point 50 * 0.14 is 7.000000000000001, which ceil() turns into 8.
        ratio = exact_decimal(0.14)

        assert ratio is not None and ratio * 50 == 7

    @pytest.mark.parametrize(
        "value", [None, True, False, "abc", "NaN", "inf", float("nan"), [], {}]
    )
    def test_non_numbers_are_none(self, value: object) -> None:
        assert exact_decimal(value) is None
