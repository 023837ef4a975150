"""How long evaluating 50 policies against 10,000 apps × 20 instances takes.

Not a test: run it and read the figures.

    .venv/bin/python bench/bench_policy.py [--apps 10000] [--instances 20] [--policies 50]

The policies are the shapes that ship (state, process, agent, event
conditions, with and without ``for``) spread over products with select
globs, so each app is selected by a share of them as in a real fleet; 2 % of
instances carry a fault. Building the snapshots is not timed; two sweeps
are, the second with the memory the first left (as the daemon runs).
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from healer.cloudpilot.models import AppMeta, Event, InstanceInfo, InstanceStatus
from healer.policy.evaluate import ConditionMemory, evaluate
from healer.policy.loader import load_text
from healer.policy.model import Policy
from healer.snapshot import AppSnapshot, build_snapshot

PRODUCTS = ["search", "ads", "maps", "feed", "pay"]

SHAPES = [
    "when: {{status: [UNKNOWN], for: 30s}}\naction: restart\n",
    "when: {{status: [RUNNING], pass_agent_state: {{not: [RUNNING, OK, UP, NORMAL]}}, for: 1m}}\n"
    "action: migrate\n",
    "when: {{status: [RUNNING], proc_state: {{not: [RUNNING, OK, UP, NORMAL]}}, for: 20s}}\n"
    "action: restart\nescalate: {{after: 3, to: migrate}}\n",
    "when: {{event: {{name: proc_dead, level: [critical]}}}}\naction: restart\n",
    "when: {{status: [INVALID_STATE], for: 10m}}\naction: delete\ndry_run: true\n",
]


def make_policies(count: int) -> list[Policy]:
    docs = []
    for n in range(count):
        product = PRODUCTS[n % len(PRODUCTS)]
        select = (
            "" if n % 10 == 0 else f"select: {{product: ['{product}*'], service_level: [1, 2]}}\n"
        )
        docs.append(f"name: p{n}\npriority: {n % 7}\n{select}" + SHAPES[n % len(SHAPES)].format())
    result = load_text("---\n".join(docs), "bench.yaml")
    assert result.ok, result.errors[:3]
    return result.policies


def make_snapshot(rng: random.Random, app: int, instances: int, now: datetime) -> AppSnapshot:
    app_id = f"app-{app}"
    states: dict[str, list[str]] = {}
    infos = []
    events = []
    for i in range(instances):
        iid = f"{app_id}.{i}"
        fault = rng.random() < 0.02
        kind = rng.randrange(4) if fault else -1
        states.setdefault("UNKNOWN" if kind == 0 else "RUNNING", []).append(iid)
        infos.append(
            InstanceInfo(
                instance_id=iid,
                host_ip=f"127.0.{app % 250}.{i}",
                main_port=8000,
                proc_state="DOWN" if kind == 1 else "RUNNING",
                container_state="RUNNING",
                pass_agent_state="DOWN" if kind == 2 else "RUNNING",
                frozen=False,
                under_repair=False,
                migrating=False,
            )
        )
        if kind == 3:
            events.append(Event(name="proc_dead", instance_id=iid, level="critical"))
    status = InstanceStatus(
        total_num=instances,
        status_instance_top_five={
            s: {"value": len(ids), "top_five_list": ids[:5]} for s, ids in states.items()
        },
    )
    meta = AppMeta(product=f"{PRODUCTS[app % len(PRODUCTS)]}-{app % 3}", service_level=1 + app % 3)
    return build_snapshot(
        app_id, now, meta=meta, budget=None, status=status, infos=infos, disabled=[], events=events
    )


def sweep(
    policies: list[Policy],
    snapshots: list[AppSnapshot],
    memory: dict[str, ConditionMemory],
    now: datetime,
) -> tuple[float, int]:
    proposals = 0
    start = time.perf_counter()
    for snap in snapshots:
        result = evaluate(policies, snap, memory.get(snap.app_id, ConditionMemory()), now)
        memory[snap.app_id] = result.memory
        proposals += len(result.proposals)
    return time.perf_counter() - start, proposals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    now = datetime(2024, 5, 1, tzinfo=UTC)
    policies = make_policies(args.policies)
    build = time.perf_counter()
    snapshots = [make_snapshot(rng, a, args.instances, now) for a in range(args.apps)]
    build = time.perf_counter() - build

    memory: dict[str, ConditionMemory] = {}
    first, proposals_1 = sweep(policies, snapshots, memory, now)
    second, proposals_2 = sweep(policies, snapshots, memory, now + timedelta(minutes=2))

    pairs = args.apps * args.instances * args.policies
    entries = sum(len(m) for m in memory.values())
    print(f"{args.policies} policies × {args.apps} apps × {args.instances} instances")
    print(f"  snapshots built (not timed): {build:.2f} s")
    print(f"  first sweep:  {first:.2f} s, {proposals_1} proposals")
    print(f"  second sweep: {second:.2f} s, {proposals_2} proposals ({entries} memory entries)")
    print(
        f"  per app: {second / args.apps * 1e3:.3f} ms; "
        f"per policy×instance: {second / pairs * 1e9:.0f} ns"
    )


if __name__ == "__main__":
    main()
