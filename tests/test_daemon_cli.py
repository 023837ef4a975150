"""``healer run`` refuses to start half-configured: exit 2 and a message naming what to fix.

Each case runs the real command as a process. None of them gets as far as
the store or CloudPilot: the configuration, the policy directory and the
enrollment are all checked first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD_POLICY = """name: restart-unknown
when:
  status: [UNKNOWN]
  for: 20s
action: restart
"""


def healer_run(config: Path) -> subprocess.CompletedProcess[str]:
    healer = str(Path(sys.executable).with_name("healer"))
    return subprocess.run(
        [healer, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """A policy directory with one good policy, and an apps file, beside the config."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "restart-unknown.yaml").write_text(GOOD_POLICY, encoding="utf-8")
    (tmp_path / "apps.txt").write_text("app-0001\n", encoding="utf-8")
    return tmp_path


def write_config(folder: Path, *lines: str) -> Path:
    base = [
        "cloudpilot: {base_url: 'http://127.0.0.1:9'}",
        f"policy_dir: '{folder / 'policies'}'",
        f"store_url: 'sqlite:///{folder / 'healer.db'}'",
        "http: {listen: '127.0.0.1:0'}",
    ]
    path = folder / "healer.yaml"
    path.write_text("\n".join([*base, *lines]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("lines", "key"),
    [
        (["enrollment: {apps: [a]}", "poll_interval: often"], "poll_interval"),
        (["enrollment: {apps: [a]}", "pol_interval: 10s"], "pol_interval"),
        (["enrollment: {apps: [a]}", "guard: {max_unhealthy: 2}"], "guard.max_unhealthy"),
        (["enrollment: {apps: [a], reload: 1m}"], "enrollment.reload"),
    ],
)
def test_a_bad_configuration_key_stops_start_up_naming_the_key(
    setup: Path, lines: list[str], key: str
) -> None:
    done = healer_run(write_config(setup, *lines))
    assert done.returncode == 2, done.stderr
    assert f"{key}:" in done.stderr
    assert not (setup / "healer.db").exists()


def test_a_broken_policy_directory_stops_start_up_naming_file_and_line(setup: Path) -> None:
    broken = setup / "policies" / "restart-process-down.yaml"
    # Line 4 has the error: an action CloudPilot does not have.
    broken.write_text(
        "name: restart-process-down\nwhen:\n  status: [RUNNING]\naction: reboot\n",
        encoding="utf-8",
    )
    done = healer_run(write_config(setup, "enrollment: {apps: [app-0001]}"))
    assert done.returncode == 2, done.stderr
    assert f"{broken}:4:" in done.stderr
    assert not (setup / "healer.db").exists()


def test_an_apps_file_that_does_not_exist_stops_start_up_naming_the_key(setup: Path) -> None:
    missing = setup / "no-such-apps.txt"
    done = healer_run(write_config(setup, f"enrollment: {{apps_file: '{missing}'}}"))
    assert done.returncode == 2, done.stderr
    assert "enrollment.apps_file" in done.stderr
    assert str(missing) in done.stderr
    assert not (setup / "healer.db").exists()


def test_a_config_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    done = healer_run(tmp_path / "nope.yaml")
    assert done.returncode == 2
    assert "nope.yaml" in done.stderr
