"""``healer demo`` end to end: a seeded 60-second run, judged by the simulator's auditor.

The demo runs as a process, exactly as people run it, with the shipped
policies, random single-instance faults, and its store on SQLite (the
default) or on a PostgreSQL schema of its own. At least 90 % of the faults
the shipped policies cover must be healed, and no action may be unsafe.

The fault schedule depends on the seed only, so a seed names a fixed set of
faults: seed 2 draws five faults in the first 14 seconds (two agent_down, one
unknown, one container_down, one frozen), four of which the shipped policies
cover (the demo leaves INVALID_STATE out of its mix: only a dry-run policy
would repair it). The slowest of them, an agent fault 14 s in, heals about 40 s later.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.e2e

SEED = 2

SUMMARY_KEYS = {
    "faults_injected",
    "faults_covered",
    "actions",
    "instances_healed",
    "refusals",
    "unsafe_actions",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_args(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """No ``--store`` (the demo's own SQLite file), or a PostgreSQL schema for this run."""
    if request.param == "sqlite":
        yield []
        return
    dsn = request.getfixturevalue("pg_dsn")
    name = f"healer_demo_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(dsn)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    url = sa.make_url(dsn).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield ["--store", url.render_as_string(hide_password=False)]
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
        admin.dispose()


def test_a_seeded_minute_of_random_faults_is_healed_safely(
    tmp_path: Path, store_args: list[str]
) -> None:
    summary_file = tmp_path / "summary.json"
    healer = str(Path(sys.executable).with_name("healer"))
    done = subprocess.run(
        [
            healer,
            "demo",
            "--duration",
            "60",
            "--apps",
            "20",
            "--seed",
            str(SEED),
            "--summary",
            str(summary_file),
            "--quiet",
            *store_args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    assert set(summary) >= SUMMARY_KEYS
    # The file holds what the demo printed last.
    assert json.loads(done.stdout[done.stdout.index("{") :]) == summary

    assert summary["unsafe_actions"] == 0, summary["unsafe_details"]
    # The seed's schedule (see the module docstring) has five faults, four of them of a kind
    # the shipped policies repair; fewer would make the 90 % below say little.
    by_kind = summary["faults_by_kind"]
    covered = sum(by_kind.get(k, 0) for k in ("unknown", "process_down", "container_down"))
    covered += by_kind.get("agent_down", 0)
    assert summary["faults_covered"] == covered
    assert sum(by_kind.values()) == summary["faults_injected"] >= covered >= 4
    assert summary["instances_healed"] >= math.ceil(0.9 * summary["faults_covered"]), summary
    # Healed by healer's actions, not by chance: every heal follows one of its actions.
    healed_by = summary["healed_by_action"]
    assert "-" not in healed_by
    assert sum(healed_by.values()) == summary["instances_healed"]
    sent = sum(sum(outcomes.values()) for outcomes in summary["actions"].values())
    assert sent >= summary["instances_healed"]
