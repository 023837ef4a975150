"""Loading policy files: every malformed file gives exact positions and messages.

Each expected error below was worked out by hand from the fixture's text:
lines and columns count from 1 and point at the offending key or value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from healer.policy.loader import (
    MAX_FILE_BYTES,
    PolicyDirectory,
    load_directory,
    load_paths,
    load_text,
)

FILES = Path(__file__).parent / "policy_files"
BAD = FILES / "bad"

ACTIONS = "restart, disable, migrate, delete, enable, repair, stop, start, interrupt, unfreeze"
STATES = (
    "NEW, DEPLOYING, DEPLOY_OK, RESTARTING, RUNNING, STOPPING, STOP, UNKNOWN, DESTORY, "
    "INVALID_STATE"
)
POLICY_KEYS = (
    "name, description, enabled, dry_run, priority, select, when, action, limits, verify, "
    "escalate, max_in_flight, max_unhealthy"
)
WHEN_KEYS = (
    "status, proc_state, container_state, pass_agent_state, frozen, disabled, under_repair, "
    "migrating, event, for"
)
SELECTOR_KEYS = "product, module, cluster, service_level, pass_type, app_id"
DURATION_HINT = "write a whole number and a unit, like 90s, 5m or 1h30m (units: w, d, h, m, s, ms)"

#: fixture → every error expected, as "line:col: message"
EXPECTED: dict[str, list[str]] = {
    "unknown_key_line5.yaml": [f"5:1: unknown key 'retries'; expected one of: {POLICY_KEYS}"],
    "unknown_nested_key.yaml": [
        "6:3: unknown key 'per_hour' in 'limits'; "
        "expected one of: per_cycle, per_app_per_hour, instance_cooldown"
    ],
    "missing_action.yaml": ["1:1: missing required key 'action'"],
    "missing_when.yaml": ["2:1: missing required key 'when'"],
    "missing_event_name.yaml": ["3:10: missing required key 'name' in 'when.event'"],
    "unknown_action.yaml": [f"3:9: action: 'reboot' is not one of: {ACTIONS}"],
    "unknown_action_long_form.yaml": [f"4:9: action.type: 'reboot' is not one of: {ACTIONS}"],
    "bad_duration_words.yaml": [f"4:8: when.for: bad duration '5 minutes': {DURATION_HINT}"],
    "bad_duration_bare_number.yaml": [
        "4:8: when.for: expected a duration like 90s, 5m or 1h30m, got 90"
    ],
    "bad_duration_order.yaml": [
        "4:29: limits.instance_cooldown: bad duration '1m1h': "
        "units must go from largest to smallest, each once"
    ],
    "negative_limit.yaml": ["5:14: limits.per_cycle: must be at least 0, got -1"],
    "limit_as_text.yaml": ["5:21: limits.per_app_per_hour: expected a whole number, got '3'"],
    "escalate_after_zero.yaml": ["4:19: escalate.after: must be at least 1, got 0"],
    "escalate_cycle.yaml": [
        "6:7: escalate.to: escalation cycle: escalate.to is this policy's own action 'restart'"
    ],
    "escalate_unknown_action.yaml": [f"6:7: escalate.to: 'reimage' is not one of: {ACTIONS}"],
    "max_unhealthy_over_100.yaml": [
        "4:16: max_unhealthy: must be between 0% and 100% (0 and 1), got '150%'"
    ],
    "max_unhealthy_bare_percent.yaml": [
        "4:16: max_unhealthy: must be between 0% and 100% (0 and 1), got 50"
    ],
    "unknown_state.yaml": [
        f"5:7: when.status[1]: unknown instance state 'RUNING'; known states: {STATES}"
    ],
    "empty_not.yaml": ["3:27: when.pass_agent_state.not: must not be empty"],
    "when_only_for.yaml": [
        "3:3: when: 'when' needs at least one condition besides 'for' "
        "(it would match every instance)"
    ],
    "when_is_list.yaml": ["2:7: when: expected a mapping, got a list"],
    "document_is_list.yaml": [
        "1:1: a policy must be a mapping (name: ..., when: ..., action: ...), got a list"
    ],
    "document_is_scalar.yaml": [
        "1:1: a policy must be a mapping (name: ..., when: ..., action: ...), "
        "got 'restart everything'"
    ],
    "empty_file.yaml": ["1:1: empty file: expected one or more policies"],
    "tab_indent.yaml": ["3:1: tab in indentation: indent with spaces"],
    "python_tag.yaml": [
        "3:9: tag !!python/object/apply:os.system is not allowed: policies are plain data"
    ],
    "alias_bomb.yaml": [
        "1:4: anchors (&a) are not allowed in policies",
        *(f"2:{5 + 4 * k}: aliases (*a) are not allowed in policies" for k in range(9)),
    ],
    "duplicate_key.yaml": ["4:1: duplicate key 'action'"],
    "syntax_error.yaml": [
        "2:24: YAML syntax error: expected ',' or ']', but got '}'",
    ],
    "bad_name.yaml": [
        "1:7: name: bad policy name 'Restart Unknown!': use letters, digits, '.', '_' and '-', "
        "starting with a letter or digit, at most 64 characters"
    ],
    "enabled_as_text.yaml": ["2:10: enabled: expected true or false, got 'yes'"],
    "priority_fraction.yaml": ["2:11: priority: expected a whole number, got 1.5"],
    "select_unknown_field.yaml": [
        f"4:3: unknown key 'region' in 'select'; "
        f"expected one of: {SELECTOR_KEYS}, exclude, exclude_app_ids"
    ],
    "select_empty_list.yaml": ["3:12: select.product: must not be empty"],
    "verify_healthy_for_too_long.yaml": [
        "6:16: verify.healthy_for: healthy_for (5m) must be shorter than timeout (5m)"
    ],
    "reserved_param.yaml": ["5:11: action.params: params may not set app_id: healer sets them"],
    "param_not_scalar.yaml": [
        "5:26: action.params.instance_ids: expected text, a number or true/false"
    ],
    "several_errors.yaml": [
        f"4:3: unknown key 'colour' in 'when'; expected one of: {WHEN_KEYS}",
        "7:14: limits.per_cycle: must be at least 0, got -2",
    ],
    "second_document_bad.yaml": ["6:16: when.frozen: expected true or false, got 'maybe'"],
    "duplicate_names.yaml": [
        f"5:7: duplicate policy name 'twin' (first defined at {BAD / 'duplicate_names.yaml'}:1:1)"
    ],
    "key_not_text.yaml": ["4:1: key '1' must be text"],
    "exclude_unknown_field.yaml": [
        f"3:13: unknown key 'app' in 'select.exclude'; expected one of: {SELECTOR_KEYS}"
    ],
    "event_empty_level.yaml": ["5:12: when.event.level: must not be empty"],
    # Read as "absent", each would widen the policy: every app, and no per-cycle limit.
    "null_values.yaml": [
        "3:11: select.app_id: a key without a value is not allowed; leave the key out instead",
        "6:21: limits.per_cycle: a key without a value is not allowed; leave the key out instead",
    ],
}


class TestMalformedFiles:
    def test_every_fixture_has_an_expectation(self) -> None:
        assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)
        assert len(EXPECTED) >= 30

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_the_file_reports_exactly_these_errors(self, name: str) -> None:
        path = BAD / name

        result = load_paths([path])

        assert not result.ok
        assert [e.file for e in result.errors] == [str(path)] * len(result.errors)
        assert [f"{e.line}:{e.col}: {e.message}" for e in result.errors] == EXPECTED[name]

    def test_an_error_prints_as_file_line_col_message(self) -> None:
        result = load_text("name: x\nwhen: {status: [UNKNOWN]}\naction: reboot\n", "p.yaml")

        assert str(result.errors[0]) == f"p.yaml:3:9: action: 'reboot' is not one of: {ACTIONS}"

    def test_the_good_documents_of_a_file_still_load_beside_a_bad_one(self) -> None:
        result = load_paths([BAD / "second_document_bad.yaml"])

        assert [p.name for p in result.policies] == ["good"]
        assert not result.ok


class TestHostileInput:
    def test_a_file_over_the_size_bound_is_refused_unread(self, tmp_path: Path) -> None:
        path = tmp_path / "big.yaml"
        path.write_text("# " + "x" * MAX_FILE_BYTES + "\n")

        result = load_paths([path])

        assert [str(e) for e in result.errors] == [
            f"{path}:1:1: file is larger than 256 KiB; split it"
        ]

    def test_text_over_the_size_bound_is_refused_too(self) -> None:
        result = load_text("#" * (MAX_FILE_BYTES + 1), "big.yaml")

        assert [e.message for e in result.errors] == ["file is larger than 256 KiB; split it"]

    def test_a_file_that_is_not_utf8_names_the_line(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.yaml"
        path.write_bytes(b"name: x\ndescription: caf\xe9\n")

        result = load_paths([path])

        assert [(e.line, e.message) for e in result.errors] == [(2, "not UTF-8 text")]

    def test_nesting_deeper_than_a_policy_needs_is_refused(self) -> None:
        text = "name: x\ndescription: " + "[" * 40 + "]" * 40 + "\n"

        result = load_text(text, "deep.yaml")

        assert [f"{e.line}:{e.col}: {e.message}" for e in result.errors] == [
            "2:29: nested deeper than 16 levels"
        ]

    def test_a_custom_local_tag_is_refused(self) -> None:
        result = load_text("name: !shell x\nwhen: {status: UNKNOWN}\naction: restart\n", "t.yaml")

        assert [f"{e.line}:{e.col}: {e.message}" for e in result.errors] == [
            "1:7: tag !shell is not allowed: policies are plain data"
        ]

    def test_a_byte_order_mark_is_accepted(self, tmp_path: Path) -> None:
        path = tmp_path / "bom.yaml"
        path.write_bytes(b"\xef\xbb\xbfname: x\nwhen: {status: UNKNOWN}\naction: restart\n")

        result = load_paths([path])

        assert result.ok, result.errors


class TestDirectories:
    def test_names_must_be_unique_across_files(self, tmp_path: Path) -> None:
        body = "name: same\nwhen: {status: [UNKNOWN]}\naction: restart\n"
        (tmp_path / "a.yaml").write_text(body)
        (tmp_path / "b.yml").write_text("# second\n" + body)

        result = load_directory(tmp_path)

        assert [str(e) for e in result.errors] == [
            f"{tmp_path / 'b.yml'}:2:7: duplicate policy name 'same' "
            f"(first defined at {tmp_path / 'a.yaml'}:1:1)"
        ]

    def test_only_yaml_files_at_the_top_of_the_directory_are_read(self, tmp_path: Path) -> None:
        (tmp_path / "p.yaml").write_text("name: p\nwhen: {status: UNKNOWN}\naction: restart\n")
        (tmp_path / "notes.txt").write_text("not a policy")
        (tmp_path / "tests").mkdir()
        (tmp_path / "tests" / "case.yaml").write_text("steps: []\n")

        result = load_directory(tmp_path)

        assert result.ok and [p.name for p in result.policies] == ["p"]
        assert result.files == [str(tmp_path / "p.yaml")]

    def test_a_directory_without_policy_files_is_an_error(self, tmp_path: Path) -> None:
        result = load_directory(tmp_path)

        assert [str(e) for e in result.errors] == [
            f"{tmp_path}:1:1: no policy files (*.yaml, *.yml) here"
        ]

    def test_a_missing_path_is_an_error(self, tmp_path: Path) -> None:
        result = load_paths([tmp_path / "nope.yaml"])

        assert [e.message for e in result.errors] == ["no such file"]

    def test_a_trailing_document_separator_is_harmless(self) -> None:
        result = load_text("name: p\nwhen: {status: UNKNOWN}\naction: restart\n---\n", "p.yaml")

        assert result.ok and len(result.policies) == 1


class TestReload:
    def test_a_broken_save_keeps_the_last_good_set(self, tmp_path: Path) -> None:
        path = tmp_path / "p.yaml"
        path.write_text("name: p\nwhen: {status: UNKNOWN}\naction: restart\n")
        policies = PolicyDirectory(tmp_path)
        assert policies.reload().ok
        first = policies.policies

        path.write_text("name: p\nwhen: {status: UNKNOWN}\naction: restart\nretries: 3\n")
        result = policies.reload()

        assert not result.ok
        assert policies.policies is first

    def test_a_good_save_replaces_the_set(self, tmp_path: Path) -> None:
        path = tmp_path / "p.yaml"
        path.write_text("name: p\nwhen: {status: UNKNOWN}\naction: restart\n")
        policies = PolicyDirectory(tmp_path)
        policies.reload()
        old_digest = policies.digest

        path.write_text("name: q\nwhen: {status: UNKNOWN}\naction: restart\n")
        policies.reload()

        assert [p.name for p in policies.policies] == ["q"]
        assert policies.digest != old_digest
