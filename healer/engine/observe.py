"""Building app snapshots from CloudPilot, as cheaply as the policies allow.

The first step of every cycle. A healthy app costs the instance-state query
and the instance-info query and nothing else: meta and budget are cached for
a TTL, the event list is fetched only when some policy reads events, and the
disabled list and a fresh budget only when there is something to decide
(``complete_for_decision``). Any piece that fails to load is named in the
snapshot's ``missing`` and the app is skipped for the cycle; nothing is done
on partial data.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from healer.cloudpilot.client import CloudPilotClient
from healer.cloudpilot.errors import CloudPilotError
from healer.cloudpilot.models import AppMeta, Event, MinUsableInfo
from healer.snapshot import AppSnapshot, build_snapshot

log = structlog.get_logger("healer.engine.observe")


@dataclass
class _Cached:
    value: Any
    until: float


@dataclass
class SnapshotSource:
    """Fetches snapshots through the client, caching what changes slowly."""

    client: CloudPilotClient
    meta_ttl: timedelta = timedelta(minutes=5)
    budget_ttl: timedelta = timedelta(seconds=60)
    address_ttl: timedelta = timedelta(minutes=10)
    monotonic: Any = time.monotonic
    _meta: dict[str, _Cached] = field(default_factory=dict)
    _budget: dict[str, _Cached] = field(default_factory=dict)
    _addr: dict[tuple[str, str, int], _Cached] = field(default_factory=dict)

    async def observe(self, app_id: str, now: datetime, *, want_events: bool) -> AppSnapshot:
        """The cheap part of a snapshot: states, instance fields, events if wanted, cached meta."""
        errors: dict[str, str] = {}
        missing: list[str] = []

        async def fetch(name: str, coro: Any) -> Any:
            try:
                return await coro
            except CloudPilotError as exc:
                # A failed piece makes the snapshot incomplete; the cycle skips the app.
                missing.append(name)
                errors[name] = str(exc)
                return None

        async def no_events() -> list[Event]:
            return []

        status, infos, events, meta = await asyncio.gather(
            fetch("instance_status", self.client.instance_status(app_id)),
            fetch("instance_info", self.client.instance_info(app_id)),
            fetch("events", self.client.events(app_id) if want_events else no_events()),
            fetch("app_meta", self._cached_meta(app_id)),
        )
        if events:
            events = await self._resolve_addresses(app_id, events, errors)
        return build_snapshot(
            app_id,
            now,
            meta=meta,
            budget=None,
            status=status,
            infos=infos,
            disabled=[],
            events=events,
            missing=missing,
            errors=errors,
        )

    async def complete_for_decision(self, snap: AppSnapshot) -> AppSnapshot:
        """Add what the guard needs before acting: the disabled list and the budget."""
        errors = dict(snap.errors)
        missing = list(snap.missing)
        disabled: list[str] | None = None
        budget: MinUsableInfo | None = None
        try:
            disabled = await self.client.disabled(snap.app_id)
        except CloudPilotError as exc:
            missing.append("disabled")
            errors["disabled"] = str(exc)
        try:
            budget = await self._cached_budget(snap.app_id)
        except CloudPilotError as exc:
            # An unloadable budget is a failed piece, not a budget of zero.
            missing.append("min_usable")
            errors["min_usable"] = str(exc)
        gone = set(disabled or ())
        instances = {
            iid: replace(inst, disabled=inst.disabled or iid in gone)
            for iid, inst in snap.instances.items()
        }
        return replace(
            snap, budget=budget, instances=instances, missing=tuple(missing), errors=errors
        )

    def forget(self, app_id: str) -> None:
        """Drop cached pieces of an app (after acting on it, its budget may have moved)."""
        self._budget.pop(app_id, None)

    async def _cached_meta(self, app_id: str) -> AppMeta:
        hit = self._meta.get(app_id)
        if hit and hit.until > self.monotonic():
            meta: AppMeta = hit.value
            return meta
        meta = await self.client.app_meta(app_id)
        self._meta[app_id] = _Cached(meta, self.monotonic() + self.meta_ttl.total_seconds())
        return meta

    async def _cached_budget(self, app_id: str) -> MinUsableInfo | None:
        hit = self._budget.get(app_id)
        if hit and hit.until > self.monotonic():
            return hit.value
        budget = await self.client.min_usable(app_id)
        self._budget[app_id] = _Cached(budget, self.monotonic() + self.budget_ttl.total_seconds())
        return budget

    async def _resolve_addresses(
        self, app_id: str, events: list[Event], errors: dict[str, str]
    ) -> list[Event]:
        """Give every event that names only host and port its instance id (cached lookups).

        An address that cannot be resolved leaves the event without an
        instance: it then matches nothing, which is the safe reading.
        """
        out: list[Event] = []
        for ev in events:
            if ev.instance_id or not ev.host_ip or ev.port is None:
                out.append(ev)
                continue
            key = (app_id, ev.host_ip, ev.port)
            hit = self._addr.get(key)
            if hit and hit.until > self.monotonic():
                iid = hit.value
            else:
                try:
                    iid = await self.client.instance_by_addr(app_id, ev.host_ip, ev.port)
                except CloudPilotError as exc:
                    errors["instance_by_addr"] = str(exc)
                    log.warning(
                        "event_address_unresolved",
                        app_id=app_id,
                        host_ip=ev.host_ip,
                        port=ev.port,
                        error=exc.__class__.__name__,
                    )
                    out.append(ev)
                    continue
                ttl = self.address_ttl.total_seconds()
                self._addr[key] = _Cached(iid, self.monotonic() + ttl)
            out.append(ev.model_copy(update={"instance_id": iid}) if iid else ev)
        return out
