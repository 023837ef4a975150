"""An in-process CloudPilot: fleet, state machine, faults and auditor, served over HTTP.

The public API that tests, the demo and the benchmarks use:

- ``Simulator`` — the fleet in memory (``Simulator.generate``, ``Simulator.from_scenario``,
  ``tick``/``advance``, ``inject_fault``, ``act``, ``report``);
- ``build_app(sim)`` — the Starlette app serving it;
- ``serve(sim, host, port)`` / ``serve_in_thread(sim, host, port)`` — run it on loopback
  and yield a ``RunningSimulator`` with ``base_url`` and ``sim``;
- ``ManualClock`` — a clock tests move by hand.
"""

from healer.simulator.core import (
    FAULT_KINDS,
    ApiFaults,
    Durations,
    FaultError,
    ManualClock,
    SimSettings,
    Simulator,
    UnknownApp,
)
from healer.simulator.server import RunningSimulator, build_app, serve, serve_in_thread

__all__ = [
    "FAULT_KINDS",
    "ApiFaults",
    "Durations",
    "FaultError",
    "ManualClock",
    "RunningSimulator",
    "SimSettings",
    "Simulator",
    "UnknownApp",
    "build_app",
    "serve",
    "serve_in_thread",
]
