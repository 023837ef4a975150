"""`healer validate` and `healer schema`, and the policies that ship in policies/."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from healer.cli import main
from healer.policy.loader import load_directory, load_text
from healer.policy.schema import policy_schema

ROOT = Path(__file__).parent.parent
POLICIES = ROOT / "policies"
SHIPPED = sorted(POLICIES.glob("*.yaml"))


class TestValidate:
    def test_the_shipped_policies_validate(self, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["validate", str(POLICIES)])

        out = capsys.readouterr().out
        assert code == 0
        assert out.startswith("ok: 5 policies in 4 files")

    def test_an_unknown_key_on_line_5_fails_naming_the_line_and_key(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "p.yaml"
        path.write_text(
            "name: p\nwhen:\n  status: [UNKNOWN]\naction: restart\nretry_forever: true\n"
        )

        code = main(["validate", str(path)])

        out = capsys.readouterr().out
        assert code == 1
        assert f"{path}:5:1: unknown key 'retry_forever'" in out

    def test_every_error_of_every_file_is_printed(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "a.yaml").write_text("name: a\nwhen: {status: UNKNOWN}\naction: reboot\n")
        (tmp_path / "b.yaml").write_text("name: b\nwhen: {for: 5m}\naction: restart\n")

        code = main(["validate", str(tmp_path)])

        captured = capsys.readouterr()
        assert code == 1
        assert [line.split(": ")[0] for line in captured.out.splitlines()] == [
            f"{tmp_path / 'a.yaml'}:3:9",
            f"{tmp_path / 'b.yaml'}:2:7",
        ]
        assert "2 errors in 2 of 2 files" in captured.err


class TestSchema:
    def test_the_committed_schema_is_current(self) -> None:
        committed = json.loads((POLICIES / "policy.schema.json").read_text())

        assert committed == policy_schema(), "run: healer schema -o policies/policy.schema.json"

    def test_healer_schema_prints_a_draft_2020_12_schema(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        assert main(["schema"]) == 0

        schema = json.loads(capsys.readouterr().out)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)

    @pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
    def test_the_schema_accepts_every_shipped_policy(self, path: Path) -> None:
        validator = jsonschema.Draft202012Validator(policy_schema())

        for document in YAML(typ="safe", pure=True).load_all(path.read_text()):
            assert list(validator.iter_errors(document)) == []

    def test_the_schema_refuses_an_unknown_key_and_a_bad_duration(self) -> None:
        validator = jsonschema.Draft202012Validator(policy_schema())
        document = {
            "name": "p",
            "when": {"status": ["UNKNOWN"], "for": "5 minutes"},
            "action": "restart",
            "retries": 3,
        }

        paths = sorted(tuple(e.absolute_path) for e in validator.iter_errors(document))

        assert paths == [(), ("when", "for")]

    @pytest.mark.parametrize(
        ("state", "valid"),
        [
            ("UNKNOWN", True),
            ("unknown", True),
            (" Running ", True),
            ("destroy", True),
            ("DESTORY", True),
            ("!RUNNING", False),
            ("UNKNOWNX", False),
            ("", False),
        ],
    )
    def test_the_schema_and_the_loader_agree_on_state_names(self, state: str, valid: bool) -> None:
        # An editor must not mark red what `healer validate` accepts, nor the reverse.
        validator = jsonschema.Draft202012Validator(policy_schema())
        document = {"name": "p", "when": {"status": {"not": [state]}}, "action": "restart"}
        text = f"name: p\nwhen: {{status: {{not: [{state!r}]}}}}\naction: restart\n"

        assert validator.is_valid(document) is valid
        assert load_text(text, "p.yaml").ok is valid


class TestShippedPolicies:
    def test_the_required_policies_ship(self) -> None:
        result = load_directory(POLICIES)

        names = {p.name for p in result.policies}
        assert result.ok
        assert {"restart-unknown", "migrate-agent-down", "restart-process-down"} <= names
        assert any(p.dry_run for p in result.policies)

    @pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
    def test_every_shipped_file_explains_itself_in_a_comment(self, path: Path) -> None:
        comments = [line for line in path.read_text().splitlines() if line.startswith("#")]

        assert any("Why these numbers" in line for line in comments)
