"""Guard decisions per second for one 10,000-app sweep (a script, not a test).

Builds a fleet of apps of 3–12 instances through the production payload
parsing, with one app in ten carrying a fault and a proposal or two, and a
ledger of in-flight actions and an hour of attempts; then times ``decide``
over the whole sweep (fleet brake included) a few times and prints the best.

    .venv/bin/python bench/bench_guard.py [--apps 10000] [--proposals-per-app 1.0]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from healer.cases.payloads import snapshot_of
from healer.cloudpilot.models import Action
from healer.guard import Attempt, GuardConfig, InFlight, LedgerView, Outcome, decide
from healer.model import PolicyRules, Proposal

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
POLICIES = [
    PolicyRules(name="restart-unknown", priority=100, per_app_per_hour=6),
    PolicyRules(name="migrate-agent-down", priority=50, per_cycle=1),
    PolicyRules(name="enable-disabled", priority=10),
]


def build(apps: int, per_app: float, seed: int = 7) -> tuple[dict, LedgerView, list[Proposal]]:
    rnd = random.Random(seed)
    snaps = {}
    proposals: list[Proposal] = []
    in_flight: list[InFlight] = []
    attempts: list[Attempt] = []
    for k in range(apps):
        app_id = f"app-{k:05d}"
        n = rnd.randint(3, 12)
        instances: dict[str, dict[str, object]] = {f"{app_id}.{i}": {} for i in range(n)}
        ids = sorted(instances)
        if rnd.random() < 0.1:
            instances[ids[0]] = {"status": "UNKNOWN"}
        budget = {"instanceControlBudget": {"type": "MinAvailableRatio", "value": 80}, "replica": n}
        snaps[app_id] = snapshot_of(app_id, {"instances": instances, "budget": budget}, NOW)
        for _ in range(int(per_app) + (rnd.random() < per_app % 1)):
            action = rnd.choice([Action.RESTART, Action.MIGRATE, Action.ENABLE])
            proposals.append(Proposal(rnd.choice(POLICIES), app_id, rnd.choice(ids), action))
        if rnd.random() < 0.05:
            in_flight.append(
                InFlight(
                    app_id, ids[-1], "restart", "restart-unknown", NOW, NOW + timedelta(minutes=5)
                )
            )
        if rnd.random() < 0.2:
            at = NOW - timedelta(minutes=rnd.randint(1, 59))
            attempts.append(
                Attempt(app_id, ids[1], "restart-unknown", "restart", at, Outcome.HEALED)
            )
    ledger = LedgerView(in_flight=tuple(in_flight), attempts=tuple(attempts))
    return snaps, ledger, proposals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--proposals-per-app", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    snaps, ledger, proposals = build(args.apps, args.proposals_per_app)
    built = time.perf_counter() - t0
    config = GuardConfig(fleet_max_in_flight=None, bucket={"burst": 100_000})

    best = float("inf")
    result = None
    for _ in range(args.rounds):
        t = time.perf_counter()
        result = decide(snaps, ledger, proposals, config, NOW, whole_sweep=True)
        best = min(best, time.perf_counter() - t)
    assert result is not None
    approved = len(result.approved)

    # The same sweep as the engine may run it: one call per app, fleet brake from the ledger.
    by_app: dict[str, list[Proposal]] = {}
    for p in proposals:
        by_app.setdefault(p.app_id, []).append(p)
    t = time.perf_counter()
    for app_id, mine in by_app.items():
        decide({app_id: snaps[app_id]}, ledger, mine, config, NOW)
    per_app = time.perf_counter() - t

    print(f"apps {args.apps}, proposals {len(proposals)}, approved {approved}")
    print(f"fleet built through payload parsing in {built:.2f} s")
    print(f"one whole sweep judged in {best * 1000:.1f} ms (best of {args.rounds})")
    print(f"guard decisions per second: {len(proposals) / best:,.0f}")
    print(
        f"one call per app ({len(by_app)} calls, same ledger view): {per_app * 1000:.1f} ms, "
        f"{len(proposals) / per_app:,.0f} decisions per second"
    )


if __name__ == "__main__":
    main()
