"""The daemon's reloads: off the event loop, and never losing the enrolled apps by accident.

A policy or enrollment reload reads files; a slow filesystem (or a FIFO) must
not stall the sweeps and ``/healthz`` that share the event loop. An apps file
that cannot be read, or is not text, keeps the last list with
``enrollment_reload_failed``; one truncated to zero bytes keeps it too
(``enrollment_empty_ignored``), while a file that lists nothing on purpose
(only comments) is taken, loudly (``enrollment_empty``).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from healer.config import EnrollmentConfig, HealerConfig, HttpConfig
from healer.daemon.service import Daemon, StartupError
from healer.observe.logging import clear_secrets, redact

ROOT = Path(__file__).resolve().parents[1]
BINARY = b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage"


def daemon_for(tmp_path: Path, apps_file: Path, **settings: Any) -> Daemon:
    values: dict[str, Any] = {
        "policy_dir": ROOT / "policies",
        "enrollment": EnrollmentConfig(apps_file=apps_file),
        "store_url": f"sqlite:///{tmp_path / 'healer.db'}",
        **settings,
    }
    config = HealerConfig(**values)
    return Daemon(config)


def events(captured: list[dict[str, Any]]) -> list[str]:
    return [str(e["event"]) for e in captured]


class TestEnrollmentFile:
    def test_a_binary_file_is_an_error_naming_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "apps.txt"
        path.write_bytes(b"app-1\n" + BINARY)

        with pytest.raises(OSError, match=re.escape(f"{path}:2: not UTF-8 text")):
            EnrollmentConfig(apps_file=path).read()

    def test_a_fifo_is_an_error_not_a_wait(self, tmp_path: Path) -> None:
        path = tmp_path / "apps.txt"
        os.mkfifo(path)

        with pytest.raises(OSError, match="not a regular file"):
            EnrollmentConfig(apps_file=path).read()

    async def test_a_binary_file_stops_start_up_naming_the_key(self, tmp_path: Path) -> None:
        path = tmp_path / "apps.txt"
        path.write_bytes(BINARY)
        daemon = daemon_for(tmp_path, path)

        with pytest.raises(StartupError, match=r"enrollment\.apps_file: cannot read: .*not UTF-8"):
            await daemon.start()

    async def test_a_binary_file_at_reload_keeps_the_last_list(self, tmp_path: Path) -> None:
        path = tmp_path / "apps.txt"
        daemon = daemon_for(tmp_path, path)
        daemon.apps = ["app-1", "app-2"]
        path.write_bytes(BINARY)

        with capture_logs() as captured:
            await daemon._reload_enrollment()

        assert daemon.apps == ["app-1", "app-2"]
        [failed] = captured
        assert failed["event"] == "enrollment_reload_failed"
        assert str(path) in failed["error"]
        assert failed["kept"] == 2

    async def test_a_file_truncated_to_zero_bytes_keeps_the_last_list(self, tmp_path: Path) -> None:
        path = tmp_path / "apps.txt"
        daemon = daemon_for(tmp_path, path)
        daemon.apps = ["app-1", "app-2"]
        path.write_bytes(b"")

        with capture_logs() as captured:
            await daemon._reload_enrollment()

        assert daemon.apps == ["app-1", "app-2"]
        assert events(captured) == ["enrollment_empty_ignored"]
        assert captured[0]["log_level"] == "warning"

    async def test_a_file_of_only_comments_un_enrolls_everything_with_a_warning(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "apps.txt"
        daemon = daemon_for(tmp_path, path)
        daemon.apps = ["app-1", "app-2"]
        path.write_text("# none\n")

        with capture_logs() as captured:
            await daemon._reload_enrollment()

        assert daemon.apps == []
        assert events(captured) == ["enrollment_empty"]
        assert captured[0]["log_level"] == "warning"

    async def test_a_changed_file_replaces_the_list(self, tmp_path: Path) -> None:
        path = tmp_path / "apps.txt"
        daemon = daemon_for(tmp_path, path)
        daemon.apps = ["app-1", "app-2"]
        path.write_text("app-2\napp-3\n")

        with capture_logs() as captured:
            await daemon._reload_enrollment()

        assert daemon.apps == ["app-2", "app-3"]
        assert events(captured) == ["enrollment_reloaded"]


class TestReloadsRunOffTheEventLoop:
    """A reload that blocks in its file read must leave the event loop free.

    The blocked read waits for a gate that only the event loop opens: on the
    loop, it would wait out its whole timeout and report the gate shut.
    """

    @staticmethod
    async def run_blocked(job: Any, gate: threading.Event) -> None:
        task = asyncio.ensure_future(job())
        for _ in range(3):
            await asyncio.sleep(0)  # the loop turns: the job is blocked in its thread
        gate.set()
        await task

    async def test_the_policy_reload_does_not_block_the_loop(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        daemon = daemon_for(tmp_path, tmp_path / "apps.txt")
        daemon.engine = SimpleNamespace(policies=[])  # type: ignore[assignment]
        gate = threading.Event()
        opened: list[bool] = []
        real = daemon.policy_dir.reload

        def slow_reload() -> Any:
            opened.append(gate.wait(timeout=5))
            return real()

        monkeypatch.setattr(daemon.policy_dir, "reload", slow_reload)

        await self.run_blocked(daemon._reload_policies, gate)

        assert opened == [True]
        assert daemon.engine.policies

    async def test_the_enrollment_reload_does_not_block_the_loop(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "apps.txt"
        path.write_text("app-1\n")
        daemon = daemon_for(tmp_path, path)
        gate = threading.Event()
        opened: list[bool] = []
        real = EnrollmentConfig.read_apps

        def slow_read(self: EnrollmentConfig) -> Any:
            opened.append(gate.wait(timeout=5))
            return real(self)

        monkeypatch.setattr(EnrollmentConfig, "read_apps", slow_read)

        await self.run_blocked(daemon._reload_enrollment, gate)

        assert opened == [True]
        assert daemon.apps == ["app-1"]


class TestAdminToken:
    async def test_the_admin_token_is_registered_for_redaction_at_start(
        self, tmp_path: Path
    ) -> None:
        clear_secrets()
        token = "admin-token-0123456789"
        daemon = daemon_for(
            tmp_path,
            tmp_path / "apps.txt",
            http=HttpConfig(listen="127.0.0.1:0", admin_token=SecretStr(token)),
        )
        try:
            await daemon._start_http()
            assert redact(f"got {token}") == "got [REDACTED]"
        finally:
            await daemon.stop()
            clear_secrets()


class TestTheStoreAtStartUp:
    @pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
    async def test_an_in_memory_store_is_refused_it_would_forget_the_ledger(
        self, tmp_path: Path, url: str
    ) -> None:
        apps = tmp_path / "apps.txt"
        apps.write_text("app-1\n", encoding="utf-8")
        daemon = daemon_for(tmp_path, apps, store_url=url)

        with pytest.raises(StartupError, match="store_url: an in-memory SQLite store forgets"):
            await daemon.start()


class TestPruning:
    async def test_a_short_retention_never_prunes_attempts_the_guard_still_counts(
        self, tmp_path: Path
    ) -> None:
        from datetime import UTC, datetime, timedelta

        from healer.store import ActionRow, Outcome

        apps = tmp_path / "apps.txt"
        apps.write_text("app-1\n", encoding="utf-8")
        # restart-unknown counts 6 restarts an hour: a 0s retention must not forget them.
        daemon = daemon_for(
            tmp_path, apps, retention=timedelta(0), http=HttpConfig(listen="127.0.0.1:0")
        )
        await daemon.start()
        try:
            store = daemon.store
            assert store is not None
            now = datetime.now(UTC)
            row = ActionRow(
                app_id="app-1", instance_id="app-1.0", policy="restart-unknown", action="restart",
                params={}, issued_at=now - timedelta(minutes=30),
                deadline=now - timedelta(minutes=20), fault_seen_at=None, replica="r",
                arithmetic={},
            )  # fmt: skip
            action_id = await store.issue_action(row)
            await store.set_outcome(action_id, Outcome.HEALED, at=now - timedelta(minutes=25))

            await daemon._prune()

            assert [r.id for r in await store.attempts_since(now - timedelta(hours=1))] == [
                action_id
            ]
        finally:
            await daemon.stop()
