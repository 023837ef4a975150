"""``healer test``: the shipped and incident cases pass, and a wrong expectation fails loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from healer.cases.payloads import snapshot_of
from healer.cli import main
from healer.cloudpilot.models import Action
from healer.guard.ledger import Outcome
from healer.guard.outcomes import Issued, flapped, unhealed_counter, verify
from healer.model import PolicyRules

ROOT = Path(__file__).resolve().parent.parent
INCIDENT_CASES = ROOT / "tests" / "cases"
POLICY_CASES = ROOT / "policies" / "tests"

GOOD = """
name: restart one UNKNOWN instance
inline:
  - {name: restart-unknown, when: {status: [UNKNOWN]}, action: restart}
steps:
  - at: 0s
    apps:
      a:
        budget: {instanceControlBudget: {type: MinAvailableRatio, value: 60}, replica: 3}
        instances: {a.0: {status: UNKNOWN}, a.1: {}, a.2: {}}
    expect:
      actions: [{app: a, instance: a.0, action: restart}]
      only: true
"""


def write(tmp_path: Path, text: str, name: str = "case.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestTheShippedCases:
    def test_every_case_passes_through_the_cli(self) -> None:
        cmd = [sys.executable, "-m", "healer.cli", "test", str(INCIDENT_CASES), str(POLICY_CASES)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)

        last = done.stdout.strip().splitlines()[-1]
        assert done.returncode == 0, done.stdout + done.stderr
        assert last.endswith(" passed, 0 failed")
        assert int(last.split()[0]) >= 23

    @pytest.mark.parametrize("n", range(1, 12))
    def test_every_incident_has_a_case(self, n: int) -> None:
        names = "".join(p.read_text(encoding="utf-8") for p in INCIDENT_CASES.glob("*.yaml"))

        assert f'name: "C{n}:' in names


class TestReporting:
    def test_a_passing_case_ends_with_the_count(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["test", str(write(tmp_path, GOOD))])

        assert code == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == "1 passed, 0 failed"

    def test_a_wrong_expectation_shows_expected_against_actual_and_exits_1(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        bad = GOOD.replace("actions: [{app: a, instance: a.0, action: restart}]", "actions: []")
        bad += "---\n" + GOOD

        code = main(["test", str(write(tmp_path, bad))])

        out = capsys.readouterr().out
        assert code == 1
        assert "FAILED" in out and "restart one UNKNOWN instance" in out
        assert "unexpected approved a/a.0 restart" in out
        assert "actual decisions:" in out
        assert out.strip().splitlines()[-1] == "1 passed, 1 failed"

    def test_a_missing_decision_is_named(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        bad = GOOD.replace(
            "action: restart}]\n      only", "action: restart, reason: budget}]\n      only"
        )
        bad = bad.replace("actions: [", "refused: [")

        assert main(["test", str(write(tmp_path, bad))]) == 1
        assert "expected refused  a/a.0 restart: budget: did not happen" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("change", "needle"),
        [
            (("steps:", "stepz: []\nsteps:"), "stepz"),
            (("at: 0s", "at: 0s\n    fail_calls: [nonsense]"), "nonsense"),
            (("restart}\n", "reboot}\n"), "reboot"),
            (("inline:", "policies: [no-such-policy]\ninline:"), "no-such-policy"),
        ],
    )
    def test_a_broken_case_is_a_failure_that_says_why(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        change: tuple[str, str],
        needle: str,
    ) -> None:
        code = main(["test", str(write(tmp_path, GOOD.replace(*change, 1)))])

        out = capsys.readouterr().out
        assert code == 1
        assert needle in out
        assert out.strip().splitlines()[-1] == "0 passed, 1 failed"

    @pytest.mark.parametrize(
        ("change", "where"),
        [
            # GOOD's lines: 8 is `a:`, 10 the instances, 12 `actions:`.
            (("a.1: {}", "a.1: {statsu: UNKNOWN}"), ":10:51: app a: instance a.1: unknown key "),
            (
                ("        budget:", "        budgett: {}\n        budget:"),
                ":9:9: app a: unknown key",
            ),
            (("      actions: [{app: a", "      actions: [{ap: a"), ":12:18: steps.0.expect"),
            (("    expect:", "    expected:"), ":11:5: steps.0.expected: Extra inputs"),
            (("at: 0s", "at: soon"), ":6:9: steps.0.at"),
            (("  - at: 0s", "  - at: 0s\n  - &x {at: 1s}\n  - *y"), "alias *y names no finished"),
            (("restart}\n", "restart}\n\tbad: tab\n"), ":5:1: YAML syntax error: found character"),
            (("at: 0s", "at: 300000000000"), ":6:9: steps.0.at: Value error, expected a duration"),
            (
                ("        budget:", "        meta: {servce_level: 1}\n        budget:"),
                ":9:16: app a: meta",
            ),
            (
                ("        budget:", "        fail_calls: instance_info\n        budget:"),
                ":9:9: app a: fail_calls: expected a list",
            ),
            (
                ("a.0: {status: UNKNOWN}", "a.0: {status: [UNKNOWN]}"),
                ":10:27: app a: instance a.0: status",
            ),
            (("      a:\n", "      <<: {}\n      a:\n"), ":8:7: merge keys (<<) are not supported"),
            (
                ("steps:", "config: {max_in_flihgt: 2}\nsteps:"),
                ":5:10: config.max_in_flihgt: Extra",
            ),
            (
                (
                    "steps:",
                    "ledger: [{app: a, instance: a.0, action: restart, policy: p, at: 5m}]\nsteps:",
                ),
                ":5:",
            ),
        ],
    )
    def test_a_broken_case_file_says_file_line_and_column(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        change: tuple[str, str],
        where: str,
    ) -> None:
        path = write(tmp_path, GOOD.replace(*change, 1))

        code = main(["test", str(path)])

        out = capsys.readouterr().out
        assert code == 1
        assert f"{path}{where}" in out or (where.startswith("alias") and where in out), out

    def test_a_case_that_expects_nothing_is_an_error_not_a_pass(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        quiet = GOOD[: GOOD.index("    expect:")]

        code = main(["test", str(write(tmp_path, quiet))])

        out = capsys.readouterr().out
        assert code == 1
        assert "no step has an `expect`" in out

    def test_anchors_and_aliases_repeat_an_app_and_expand_within_bounds(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        repeated = GOOD.replace("      a:\n", "      a: &app\n", 1) + (
            "  - at: 1m\n    apps: {a: *app}\n"
            "    expect: {refused: [{app: a, instance: a.0, reason: in_flight}], only: true}\n"
        )
        bomb = "\n".join(
            [f"a0: &a0 [{', '.join(['x'] * 10)}]"]
            + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
        )

        assert main(["test", str(write(tmp_path, repeated))]) == 0, capsys.readouterr().out
        assert main(["test", str(write(tmp_path, bomb, "bomb.yaml"))]) == 1
        assert "aliases expand to more than 100000 values" in capsys.readouterr().out

    def test_policies_are_found_beside_a_tests_directory(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (tmp_path / "tests").mkdir()
        (tmp_path / "restart-unknown.yaml").write_text(
            "name: restart-unknown\nwhen: {status: [UNKNOWN]}\naction: restart\n"
        )
        case = GOOD.replace(
            "inline:\n  - {name: restart-unknown, when: {status: [UNKNOWN]}, action: restart}",
            "policies: [restart-unknown]",
        )

        code = main(["test", str(write(tmp_path / "tests", case))])

        assert code == 0, capsys.readouterr().out


class TestPayloads:
    def test_more_than_five_in_a_state_leaves_the_rest_unresolved(self) -> None:
        # The API names at most five instances per state; the other two cannot be placed.
        instances = {f"a.{n}": {"status": "UNKNOWN"} for n in range(7)}
        snap = snapshot_of("a", {"instances": instances}, datetime(2026, 1, 1, tzinfo=UTC))

        states = [i.state for i in snap.instances.values()]
        assert states.count("UNKNOWN") == 5
        assert states.count(None) == 2

    def test_a_failed_call_makes_the_snapshot_incomplete(self) -> None:
        snap = snapshot_of("a", {"instances": {"a.0": {}}}, datetime.now(UTC), ["disabled"])

        assert not snap.complete
        assert snap.missing == ("disabled",)


T0 = datetime(2026, 1, 1, tzinfo=UTC)
RULES = PolicyRules(
    name="p", verify_timeout=timedelta(minutes=10), healthy_for=timedelta(minutes=1)
)


def inst(**fields: object) -> object:
    return snapshot_of("a", {"instances": {"a.0": fields}}, T0).instances["a.0"]


class TestVerification:
    def test_healed_only_after_healthy_for(self) -> None:
        rec = Issued("a", "a.0", Action.RESTART, T0)

        first = verify(rec, inst(), T0 + timedelta(minutes=2), RULES)  # type: ignore[arg-type]
        rec2 = Issued("a", "a.0", Action.RESTART, T0, first.healthy_since)
        second = verify(rec2, inst(), T0 + timedelta(minutes=3), RULES)  # type: ignore[arg-type]

        assert first.outcome is Outcome.PENDING
        assert second.outcome is Outcome.HEALED

    def test_still_broken_at_the_timeout_is_not_healed(self) -> None:
        rec = Issued("a", "a.0", Action.RESTART, T0)
        broken = inst(status="UNKNOWN")

        assert verify(rec, broken, T0 + timedelta(minutes=9), RULES).outcome is Outcome.PENDING  # type: ignore[arg-type]
        assert verify(rec, broken, T0 + timedelta(minutes=10), RULES).outcome is Outcome.NOT_HEALED  # type: ignore[arg-type]

    def test_healthy_at_the_timeout_closes_as_healed(self) -> None:
        rec = Issued("a", "a.0", Action.MIGRATE, T0 - timedelta(minutes=40))

        assert verify(rec, inst(), T0, RULES).outcome is Outcome.HEALED  # type: ignore[arg-type]

    def test_an_unreadable_app_closes_as_unknown_at_the_timeout(self) -> None:
        rec = Issued("a", "a.0", Action.RESTART, T0)

        assert (
            verify(rec, None, T0 + timedelta(minutes=5), RULES, seen=False).outcome
            is Outcome.PENDING
        )
        assert (
            verify(rec, None, T0 + timedelta(minutes=10), RULES, seen=False).outcome
            is Outcome.UNKNOWN
        )

    def test_an_agent_fault_is_not_healed(self) -> None:
        rec = Issued("a", "a.0", Action.MIGRATE, T0)

        got = verify(rec, inst(pass_agent_state="DOWN"), T0 + timedelta(minutes=10), RULES)  # type: ignore[arg-type]

        assert got.outcome is Outcome.NOT_HEALED

    @pytest.mark.parametrize(
        ("action", "fields", "done"),
        [
            (Action.DISABLE, {"disabled": True}, True),
            (Action.DISABLE, {}, False),
            (Action.STOP, {"status": "STOP"}, True),
            (Action.UNFREEZE, {"frozen": False}, True),
            (Action.UNFREEZE, {"frozen": True}, False),
            (Action.DELETE, {"status": "DESTORY"}, True),
        ],
    )
    def test_each_action_has_its_own_goal(
        self, action: Action, fields: dict[str, object], done: bool
    ) -> None:
        rules = PolicyRules(name="p")
        got = verify(Issued("a", "a.0", action, T0), inst(**fields), T0, rules)  # type: ignore[arg-type]

        assert (got.outcome is Outcome.HEALED) is done

    def test_a_deleted_instance_that_is_gone_is_healed(self) -> None:
        got = verify(Issued("a", "a.0", Action.DELETE, T0), None, T0, PolicyRules(name="p"))

        assert got.outcome is Outcome.HEALED

    def test_failing_again_inside_the_probation_is_a_flap(self) -> None:
        broken = inst(status="UNKNOWN")
        probation = timedelta(minutes=30)

        assert flapped(Action.RESTART, T0, broken, T0 + timedelta(minutes=5), probation)  # type: ignore[arg-type]
        assert not flapped(Action.RESTART, T0, broken, T0 + timedelta(minutes=30), probation)  # type: ignore[arg-type]
        assert not flapped(Action.RESTART, T0, inst(), T0 + timedelta(minutes=5), probation)  # type: ignore[arg-type]

    def test_unhealed_attempts_are_counted_within_the_window(self) -> None:
        from healer.guard.ledger import Attempt

        attempts = [
            Attempt("a", "a.0", "p", "restart", T0 - timedelta(minutes=m), outcome)
            for m, outcome in [
                (5, Outcome.NOT_HEALED),
                (10, Outcome.FAILED),
                (15, Outcome.HEALED),
                (20, Outcome.PENDING),
                (90, Outcome.NOT_HEALED),
            ]
        ]

        count = unhealed_counter(attempts, T0)

        assert count("p", "a", "a.0", timedelta(hours=1)) == 2
        assert count("p", "a", "a.0", timedelta(hours=2)) == 3
        assert count("q", "a", "a.0", timedelta(hours=2)) == 0


class TestOddCaseFiles:
    def test_a_fifo_given_as_a_case_fails_instead_of_waiting(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        fifo = tmp_path / "case.yaml"
        os.mkfifo(fifo)

        code = main(["test", str(fifo)])

        assert code == 1
        assert "not a regular file" in capsys.readouterr().out

    def test_a_budget_that_is_not_a_mapping_is_sent_as_written_and_skips_the_app(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        # A case may describe a malformed answer: min_usable_info as text cannot be read,
        # so the snapshot is incomplete and the app is skipped, as in production.
        odd = GOOD.replace(
            "budget: {instanceControlBudget: {type: MinAvailableRatio, value: 60}, replica: 3}",
            "budget: not-a-budget",
        ).replace(
            "actions: [{app: a, instance: a.0, action: restart}]",
            "refused: [{app: a, instance: a.0, reason: stale_snapshot},"
            " {app: a, reason: stale_snapshot}]",
        )

        assert main(["test", str(write(tmp_path, odd))]) == 0, capsys.readouterr().out


class TestThePolicyDirectory:
    def test_a_policies_path_that_is_no_directory_is_said_once(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code = main(["test", str(write(tmp_path, GOOD)), "--policies", str(tmp_path / "nope")])

        err = capsys.readouterr().err
        assert code == 2
        assert err == f"healer test: --policies: {tmp_path / 'nope'} is not a directory\n"

    def test_a_broken_policy_directory_is_listed_once_for_all_its_cases(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        policies = tmp_path / "policies"
        policies.mkdir()
        (policies / "bad.yaml").write_text("name: bad\nwhen: {status: [UNKNOWN]}\naction: reboot\n")
        named = GOOD.replace(
            "inline:\n  - {name: restart-unknown, when: {status: [UNKNOWN]}, action: restart}",
            "policies: [restart-unknown]",
        )
        cases = [write(tmp_path, named, f"c{n}.yaml") for n in range(3)]

        code = main(["test", *map(str, cases), "--policies", str(policies)])

        out = capsys.readouterr().out
        assert code == 1
        assert out.count("bad.yaml:3:") == 1
        assert out.count("has errors (listed above)") == 2
        assert out.strip().splitlines()[-1] == "0 passed, 3 failed"
