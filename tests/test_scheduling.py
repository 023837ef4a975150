"""How healer schedules its work: observations spread over the interval, one sweep at a time.

DESIGN section 2 asks that work be spread across the poll interval (never a
burst of every app at once), that one app never have two cycles running at
once, and that missed runs coalesce. healer runs one APScheduler job, the
sweep, which observes every app with the starts spread over
``observe_spread × poll_interval``; so an app's cycle is its part of one
sweep, and a second sweep never starts while one runs.

Times here are only ever checked from below (a sleep never ends early), so a
slow machine cannot fail these tests.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from test_e2e_daemon import healer_config, policy_dir, ready, running, simulated  # noqa: F401

from healer.snapshot import AppSnapshot

pytestmark = pytest.mark.e2e


async def test_a_sweep_spreads_its_observations_over_the_observe_window(
    tmp_path: Path,
    policy_dir: Path,  # noqa: F811
) -> None:
    apps, interval, spread = 10, 2.0, 0.5
    with simulated(apps, seed=4) as served:
        config = healer_config(
            served,
            f"sqlite:///{tmp_path}/h.db",
            policy_dir,
            poll_interval=timedelta(seconds=interval),
            observe_spread=spread,
        )
        async with running(config) as daemon:
            await ready(daemon)
            engine = daemon.engine
            assert engine is not None
            loop = asyncio.get_running_loop()
            starts: list[tuple[float, str]] = []
            observe = engine.source.observe

            async def timed(app_id: str, *args: object, **kw: object) -> AppSnapshot:
                starts.append((loop.time(), app_id))
                return await observe(app_id, *args, **kw)  # type: ignore[arg-type]

            engine.source.observe = timed  # type: ignore[method-assign]
            await engine.sweep(served.sim.app_ids)

    # The window is 1 s for 10 apps: app k starts k × 0.1 s after the first, in order.
    times = [t for t, _ in starts]
    assert [a for _, a in starts] == served.sim.app_ids
    step = interval * spread / apps
    for k, t in enumerate(times):
        assert t - times[0] >= k * step - 0.005
    assert times[-1] - times[0] >= (apps - 1) * step - 0.005


async def test_a_sweep_slower_than_the_interval_never_overlaps_the_next_and_missed_runs_coalesce(
    tmp_path: Path,
    policy_dir: Path,  # noqa: F811
) -> None:
    with simulated(4, seed=4) as served:
        config = healer_config(
            served,
            f"sqlite:///{tmp_path}/h.db",
            policy_dir,
            poll_interval=timedelta(seconds=0.5),
            observe_spread=0.0,
        )
        async with running(config) as daemon:
            await ready(daemon)
            engine = daemon.engine
            assert engine is not None
            sweep = engine.sweep
            running_now, most, runs = 0, 0, 0

            async def slow(apps: list[str]) -> object:
                # Each sweep takes 1.5 s: three intervals' worth of runs are missed each time.
                nonlocal running_now, most, runs
                running_now += 1
                runs += 1
                most = max(most, running_now)
                try:
                    await asyncio.sleep(1.5)
                    return await sweep(apps)
                finally:
                    running_now -= 1

            engine.sweep = slow  # type: ignore[method-assign]
            await asyncio.sleep(5.0)

    assert most == 1
    # In 5 s at most ceil(5 / 1.5) + 1 sweeps can start; without coalescing the missed
    # runs would queue up and run back to back (about 10).
    assert 1 <= runs <= 5
