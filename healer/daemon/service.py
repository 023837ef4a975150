"""The healer process: configuration in, a running engine, scheduler and HTTP server out.

``Daemon`` wires the parts together and owns their lifetimes. APScheduler 3
(``AsyncIOScheduler``) drives four jobs: the sweep every poll interval (one
at a time, missed runs coalesced, the apps' observations spread across the
interval by the engine), the policy reload, the enrollment reload, and the
ledger's pruning. A reload that fails keeps what was loaded last and says why
in the logs and the metrics; only start-up refuses to run on a broken
policy directory or enrollment, so that healer never starts half-configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Generator
from datetime import UTC, datetime
from typing import Any

import structlog
import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from healer.cloudpilot.client import CloudPilotClient
from healer.config import HealerConfig
from healer.engine.engine import Engine, SweepResult, request_counter
from healer.observe.http import build_http_app
from healer.observe.logging import register_secret
from healer.observe.metrics import HealerMetrics
from healer.policy.loader import PolicyDirectory
from healer.policy.model import Select
from healer.store import Store
from healer.store.errors import StoreConfigError
from healer.store.store import normalize_url, sqlite_file

log = structlog.get_logger("healer.daemon")


class StartupError(Exception):
    """healer cannot start: the message says what to fix."""


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Daemon:
    """One healer process. ``async with Daemon(config) as d: await d.wait()``."""

    def __init__(self, config: HealerConfig, *, metrics: HealerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or HealerMetrics()
        self.apps: list[str] = []
        self.policy_dir = PolicyDirectory(config.policy_dir)
        self.scheduler: AsyncIOScheduler | None = None
        self.engine: Engine | None = None
        self.store: Store | None = None
        self.client: CloudPilotClient | None = None
        self.http_port: int | None = None
        self._server: _QuietServer | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._sweeping = asyncio.Lock()
        self._sweeps_done = 0
        #: The errors of the last failed policy reload, logged once; empty once one succeeds.
        self._reload_errors: list[str] = []

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open everything, check everything, then start the jobs and the HTTP server."""
        try:
            await self._start()
        except BaseException:
            # Never left half-started: close what was opened before the failure.
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        self.metrics.set_poll_interval(cfg.poll_interval.total_seconds())

        # Policies and enrollment must load before anything runs. Files are read in a worker
        # thread: a slow or odd filesystem must never stall the event loop.
        loaded = await asyncio.to_thread(self.policy_dir.reload)
        if not loaded.ok:
            errors = "\n".join(f"  {e}" for e in loaded.errors)
            raise StartupError(f"policy directory {cfg.policy_dir} has errors:\n{errors}")
        self.metrics.observe_policy_load(True, len(loaded.policies))
        try:
            self.apps = await asyncio.to_thread(cfg.enrollment.read)
        except (OSError, ValueError) as exc:
            raise StartupError(f"enrollment.apps_file: cannot read: {exc}") from exc
        if not self.apps:
            log.warning("no_apps_enrolled")

        # The ledger must outlive the process: it is what keeps a restarted healer from
        # sending an action twice. An in-memory SQLite store would be empty after a restart.
        try:
            in_memory = normalize_url(cfg.store_url).get_backend_name() == "sqlite" and (
                sqlite_file(cfg.store_url) is None
            )
        except StoreConfigError as exc:
            raise StartupError(f"store_url: {exc}") from None
        if in_memory:
            msg = "store_url: an in-memory SQLite store forgets the ledger on restart; give a file"
            raise StartupError(msg)
        try:
            self.store = await Store.open(cfg.store_url)
        except Exception as exc:
            # Whatever the driver raised, the message must name the setting to fix.
            raise StartupError(f"store_url: cannot open the store: {exc}") from exc
        calls = request_counter(self.metrics)
        self.client = CloudPilotClient(cfg.cloudpilot, on_request=calls)
        self.engine = Engine(
            client=self.client,
            store=self.store,
            guard=cfg.guard,
            metrics=self.metrics,
            calls=calls,
            poll_interval=cfg.poll_interval,
            observe_spread=cfg.observe_spread,
            concurrency=cfg.concurrency,
            replica_id=cfg.replica_id,
            meta_ttl=cfg.cache.meta_ttl,
            budget_ttl=cfg.cache.budget_ttl,
            address_ttl=cfg.cache.address_ttl,
        )
        self.engine.policies = list(loaded.policies)
        await self.engine.start()
        await self._refresh_pause_metrics()

        await self._start_http()
        self._start_scheduler()
        log.info(
            "healer_started",
            apps=len(self.apps),
            policies=len(loaded.policies),
            poll_interval_s=cfg.poll_interval.total_seconds(),
            http=f"{cfg.http.host}:{self.http_port}",
            cloudpilot=cfg.cloudpilot.base_url,
        )

    def _start_scheduler(self) -> None:
        cfg = self.config
        sched = AsyncIOScheduler(timezone=UTC)
        now = datetime.now(UTC)
        poll = cfg.poll_interval.total_seconds()
        sched.add_job(
            self._sweep_job,
            IntervalTrigger(seconds=poll, timezone=UTC),
            id="sweep",
            next_run_time=now,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(poll)),
        )
        sched.add_job(
            self._reload_policies,
            IntervalTrigger(seconds=cfg.policy_reload_interval.total_seconds(), timezone=UTC),
            id="reload_policies",
            max_instances=1,
            coalesce=True,
        )
        sched.add_job(
            self._reload_enrollment,
            IntervalTrigger(seconds=cfg.enrollment.reload_interval.total_seconds(), timezone=UTC),
            id="reload_enrollment",
            max_instances=1,
            coalesce=True,
        )
        sched.add_job(
            self._prune,
            IntervalTrigger(hours=1, timezone=UTC),
            id="prune",
            max_instances=1,
            coalesce=True,
        )
        sched.start()
        self.scheduler = sched

    async def _start_http(self) -> None:
        cfg = self.config.http
        try:
            token = cfg.resolved_admin_token()
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        if token is None:
            log.warning("admin_api_disabled", why="no admin token configured")
        else:
            register_secret(token.get_secret_value())
        app = build_http_app(self, token)
        sock = socket.socket(
            socket.AF_INET6 if ":" in cfg.host else socket.AF_INET, socket.SOCK_STREAM
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.host, cfg.port))
        except OSError as exc:
            sock.close()
            raise StartupError(f"http.listen: cannot listen on {cfg.listen}: {exc}") from exc
        self.http_port = int(sock.getsockname()[1])
        self._server = _QuietServer(
            # log_config=None: uvicorn's own lines go through healer's JSON logging too.
            uvicorn.Config(
                app, log_level="warning", access_log=False, lifespan="off", log_config=None
            )
        )
        self._server_task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._server_task.done():
                self._server_task.result()
                raise StartupError(f"http.listen: server on {cfg.listen} stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop the jobs, let a running sweep finish its writes, close everything."""
        self._stopping.set()
        if self.scheduler is not None:
            # Let a sweep in progress finish recording what it issued before closing the store.
            self.scheduler.pause()
            grace = 2 * self.config.poll_interval.total_seconds() + 10
            try:
                await asyncio.wait_for(self._sweeping.acquire(), timeout=grace)
                self._sweeping.release()
            except TimeoutError:
                log.error("sweep_abandoned_at_stop", waited_s=grace)
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._server_task
            self._server = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        if self.store is not None:
            await self.store.close()
            self.store = None
        log.info("healer_stopped")

    async def wait(self) -> None:
        """Run until SIGTERM or SIGINT (or ``stop``)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()

    # -- jobs ----------------------------------------------------------------------------

    async def _sweep_job(self) -> SweepResult | None:
        assert self.engine is not None
        if self._stopping.is_set():
            return None
        async with self._sweeping:
            try:
                result = await self.engine.sweep(self.apps)
            except Exception as exc:
                # One failed sweep must not stop the daemon; the next one starts afresh.
                log.exception("sweep_failed", error=type(exc).__name__)
                return None
            self._sweeps_done += 1
            # Inside the lock: ``stop`` closes the store as soon as it holds the lock.
            await self._refresh_pause_metrics()
        return result

    async def _reload_policies(self) -> None:
        assert self.engine is not None
        before = self.policy_dir.digest
        # In a worker thread: a sweep or /healthz must never wait on the filesystem.
        loaded = await asyncio.to_thread(self.policy_dir.reload)
        if not loaded.ok:
            # Keep the last good set running: a half-saved file must not change behaviour.
            self.metrics.observe_policy_load(False)
            errors = [str(e) for e in loaded.errors]
            if errors != self._reload_errors:
                # Once per new set of errors; the metrics say it every scrape meanwhile.
                log.error(
                    "policy_reload_failed", errors=errors[:20], kept=len(self.engine.policies)
                )
                self._reload_errors = errors
            return
        self.metrics.observe_policy_load(True, len(loaded.policies))
        if loaded.digest != before:
            self.engine.policies = list(loaded.policies)
            log.info("policies_reloaded", policies=len(loaded.policies))
        elif self._reload_errors:
            log.info("policies_recovered", policies=len(loaded.policies), changed=False)
        self._reload_errors = []

    async def _reload_enrollment(self) -> None:
        try:
            apps, size = await asyncio.to_thread(self.config.enrollment.read_apps)
        except (OSError, ValueError) as exc:
            log.error("enrollment_reload_failed", error=str(exc), kept=len(self.apps))
            return
        dropped = [a for a in self.apps if a not in apps]
        if size == 0 and dropped:
            # A file of zero bytes is a save caught mid-write or an accident, not a decision:
            # un-enrolling on purpose leaves content (a comment line) behind.
            log.warning(
                "enrollment_empty_ignored",
                apps_file=str(self.config.enrollment.apps_file),
                kept=len(self.apps),
            )
            return
        if apps == self.apps:
            return
        if not apps:
            log.warning("enrollment_empty", before=len(self.apps))
        else:
            log.info("enrollment_reloaded", apps=len(apps), before=len(self.apps))
        self.apps = apps

    async def _prune(self) -> None:
        if self.store is None or self.engine is None:
            return
        # Never shorter than what the guard reads back: a short `retention` must not erase
        # the attempts a cooldown, a rate limit, an escalation or a suspension still counts.
        keep = max(self.config.retention, self.engine.history_horizon())
        before = datetime.now(UTC) - keep
        removed = await self.store.prune(before)
        if removed:
            log.info("ledger_pruned", rows=removed)

    async def _refresh_pause_metrics(self) -> None:
        if self.store is None:
            return
        pauses = await self.store.active_pauses(datetime.now(UTC))
        glob = [p.created_at.timestamp() for p in pauses if p.app_id is None]
        per_app = [p.created_at.timestamp() for p in pauses if p.app_id is not None]
        self.metrics.set_pauses(min(glob) if glob else None, per_app)

    # -- the HTTP backend ----------------------------------------------------------------

    def alive(self) -> bool:
        return self.scheduler is not None and self.scheduler.running

    def enrolled(self, app_id: str) -> bool:
        """Whether healer looks after the app (a pause for any other would do nothing)."""
        return app_id in self.apps

    def ready(self) -> bool:
        # Ready once a sweep has ended with CloudPilot answering for at least one app. Not
        # "every app complete": one enrolled app that CloudPilot never answers for would
        # keep the pod out of its Service for good.
        return self.engine is not None and self.engine.sweeps_answered > 0

    def render_metrics(self) -> tuple[bytes, str]:
        return self.metrics.render()

    def status(self, app_id: str | None) -> dict[str, Any]:
        engine = self.engine
        apps = engine.status if engine else {}
        chosen = {app_id: apps[app_id]} if app_id and app_id in apps else ({} if app_id else apps)
        last = engine.last_sweep if engine else None
        return {
            "ready": self.ready(),
            "enrolled": len(self.apps),
            "policies": [p.name for p in engine.policies] if engine else [],
            "last_sweep": {
                "started_at": last.started_at.isoformat(),
                "apps": last.apps,
                "complete": last.complete,
                "issued": last.issued,
                "seconds": round(last.seconds, 3),
                "fleet_brake": last.guard.brake.engaged if last.guard else None,
            }
            if last
            else None,
            "apps": {k: v.to_json() for k, v in sorted(chosen.items())},
        }

    async def actions(self, **filters: Any) -> list[dict[str, Any]]:
        assert self.store is not None
        rows = await self.store.actions(
            app_id=filters.get("app"),
            policy=filters.get("policy"),
            outcome=filters.get("outcome"),
            since=filters.get("since"),
            limit=filters.get("limit", 200),
        )
        return [action_json(r) for r in rows]

    async def pause(
        self, app_id: str | None, who: str, why: str, until: datetime
    ) -> dict[str, Any]:
        assert self.store is not None
        pause_id = await self.store.add_pause(app_id, who, why, until)
        await self._refresh_pause_metrics()
        return {"paused": app_id or "*", "id": pause_id, "until": until.isoformat()}

    async def pauses(self) -> list[dict[str, Any]]:
        assert self.store is not None
        return [
            {
                "id": r.id,
                "app_id": r.app_id,
                "scope": "app" if r.app_id is not None else "global",
                "who": r.who,
                "why": r.why,
                "created_at": r.created_at.isoformat(),
                "until": r.until.isoformat() if r.until is not None else None,
            }
            for r in await self.store.active_pauses(datetime.now(UTC))
        ]

    async def resume(self, app_id: str | None, who: str) -> dict[str, Any]:
        assert self.store is not None
        removed = await self.store.remove_pause(app_id, who)
        await self._refresh_pause_metrics()
        # A global resume ends the global pause only: say which pauses still hold.
        still = await self.store.active_pauses(datetime.now(UTC))
        return {
            "resumed": app_id or "*",
            "pauses_removed": removed,
            "pauses_in_force": sorted(p.app_id or "*" for p in still),
        }

    async def resume_policy(self, name: str, who: str) -> dict[str, Any]:
        assert self.store is not None
        resumed = await self.store.resume_policy(name, who)
        return {"policy": name, "resumed": resumed}

    async def add_silence(
        self, select: Select, who: str, why: str, start: datetime, until: datetime, tz: str
    ) -> dict[str, Any]:
        assert self.store is not None
        # Stored as the policy selector writes it; each sweep's guard matches it like a policy.
        selector = select.model_dump(mode="json", exclude_none=True)
        silence_id = await self.store.add_silence(selector, start, until, tz, who, why, at=start)
        return {
            "id": silence_id,
            "select": selector,
            "start": start.isoformat(),
            "end": until.isoformat(),
            "timezone": tz,
            "who": who,
            "why": why,
        }

    async def silences(self) -> list[dict[str, Any]]:
        assert self.store is not None
        return [silence_json(r) for r in await self.store.active_silences(datetime.now(UTC))]

    async def remove_silence(self, silence_id: int, who: str) -> dict[str, Any]:
        assert self.store is not None
        removed = await self.store.remove_silence(silence_id, who)
        return {"id": silence_id, "removed": removed}


def action_json(r: Any) -> dict[str, Any]:
    """An action record as JSON for the API and ``healer history``."""
    return {
        "id": r.id,
        "app_id": r.app_id,
        "instance_id": r.instance_id,
        "policy": r.policy,
        "action": r.action,
        "outcome": str(r.outcome),
        "issued_at": r.issued_at.isoformat(),
        "deadline": r.deadline.isoformat(),
        "outcome_at": r.outcome_at.isoformat() if r.outcome_at else None,
        "detail": r.detail,
        "replica": r.replica,
        "arithmetic": r.arithmetic,
    }


def silence_json(r: Any) -> dict[str, Any]:
    """A silence record as JSON for ``GET /v1/silences``."""
    return {
        "id": r.id,
        "select": r.selector,
        "start": r.start.isoformat(),
        "end": r.end.isoformat(),
        "timezone": r.tz,
        "who": r.who,
        "why": r.why,
        "created_at": r.created_at.isoformat(),
    }


@contextlib.asynccontextmanager
async def running(config: HealerConfig, **kwargs: Any) -> AsyncIterator[Daemon]:
    """A started daemon for the block, stopped after it."""
    daemon = Daemon(config, **kwargs)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()
