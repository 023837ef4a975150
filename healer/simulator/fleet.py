"""The simulated fleet: apps, instances, and how a seeded fleet is generated.

This is the simulator's ground truth, the thing the healer only sees through
CloudPilot payloads. It also holds the one piece of arithmetic the auditor
needs, ``required`` and ``available`` from DESIGN section 3, computed here
from the true state with integers and exact fractions, independently of the
guard's code so that the two check each other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from healer.cloudpilot.models import exact_decimal

#: Values the simulator reports for a healthy process, container and agent.
HEALTHY = "RUNNING"

#: What the simulator reports for each component when it has failed.
PROC_DOWN = "DEAD"
CONTAINER_DOWN = "EXITED"
AGENT_DOWN = "DOWN"

#: Component values the auditor takes as healthy (DESIGN section 3 defaults).
HEALTHY_VALUES = frozenset({"RUNNING", "OK", "UP", "NORMAL"})

PRODUCTS = ("search", "ads", "maps", "feed", "pay", "video", "mail", "cloud")
MODULES = ("web", "api", "worker", "cache", "gateway", "indexer", "scheduler")
CLUSTERS = ("bj-01", "bj-02", "sh-01", "gz-01", "hz-01", "nj-01")
PASS_TYPES = ("docker", "kvm", "matrix")


@dataclass(slots=True)
class Operation:
    """An action in progress on one instance, finished by the clock at ``due``."""

    op_id: int
    action: str
    started: float
    due: float
    by_request: bool
    #: The instance fields as they were before the action, restored by interrupt.
    before: dict[str, Any]


@dataclass(slots=True)
class SimInstance:
    """One instance's true state, in the API's own field names."""

    instance_id: str
    index: int
    host_ip: str
    main_port: int
    state: str = "RUNNING"
    proc_state: str | None = HEALTHY
    container_state: str | None = HEALTHY
    pass_agent_state: str | None = HEALTHY
    frozen: bool = False
    under_repair: bool = False
    migrating: bool = False
    op: Operation | None = None
    #: Set when a fault hits the instance, cleared when an action heals it.
    faulted: bool = False
    #: The action that last acted on this instance since it was faulted.
    acted_since_fault: str | None = None

    def components_ok(self) -> bool:
        """Process and container not in a fault (missing counts as not a fault)."""
        return _not_fault(self.proc_state) and _not_fault(self.container_state)

    def components_healthy(self) -> bool:
        """Process, container and agent all free of faults."""
        return self.components_ok() and _not_fault(self.pass_agent_state)

    def healthy(self) -> bool:
        """RUNNING, every component healthy, not frozen, not taken out of service."""
        return (
            self.state == "RUNNING"
            and self.components_ok()
            and _not_fault(self.pass_agent_state)
            and not self.frozen
            and not self.under_repair
            and not self.migrating
            and self.op is None
        )


def _not_fault(value: str | None) -> bool:
    return value is None or value.strip().upper() in HEALTHY_VALUES


@dataclass(slots=True)
class SimApp:
    """One app: its metadata, budget, hard limits, instances and disabled list."""

    app_id: str
    meta: dict[str, Any]
    #: ``min_usable_info`` exactly as served; ``None`` when the app has none.
    budget: dict[str, Any] | None
    hard_limits: dict[str, Any]
    instances: dict[str, SimInstance] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    next_index: int = 0

    @property
    def cluster(self) -> str | None:
        value = self.meta.get("cluster")
        return None if value is None else str(value)

    def is_disabled(self, inst: SimInstance) -> bool:
        return inst.instance_id in self.disabled

    def is_available(self, inst: SimInstance) -> bool:
        """DESIGN section 3: RUNNING, serving, not taken out, nothing in flight."""
        return (
            inst.state == "RUNNING"
            and inst.components_ok()
            and not self.is_disabled(inst)
            and not inst.under_repair
            and not inst.migrating
            and inst.op is None
        )

    def available(self) -> int:
        return sum(1 for inst in self.instances.values() if self.is_available(inst))

    def replica(self) -> int:
        """``R``: the budget's ``replica`` when it is a whole number, else the live count."""
        if self.budget is not None:
            r = exact_decimal(self.budget.get("replica"))
            if r is not None and r == r.to_integral_value() and r >= 0:
                return int(r)
        return len(self.instances)

    def required(self) -> int:
        """How many instances must stay available, per DESIGN section 3, in exact arithmetic."""
        return required_for(self.budget, self.replica())


def _ceil(a: Fraction) -> int:
    return -(-a.numerator // a.denominator)


def required_for(budget: dict[str, Any] | None, r: int) -> int:
    """``required`` for a ``min_usable_info`` payload and a desired count ``R``.

    An unknown or out-of-range piece makes the whole budget unknown, which
    means every one of the ``R`` instances is required.
    """
    if not isinstance(budget, dict):
        return r
    candidates = [0]

    floor = budget.get("replica_that_at_least_need_to_keep")
    if floor is not None:
        f = exact_decimal(floor)
        if f is None or f < 0:
            return r
        candidates.append(_ceil(Fraction(f)))

    control = budget.get("instanceControlBudget")
    if control is not None:
        if not isinstance(control, dict) or control.get("type") != "MinAvailableRatio":
            return r
        v = exact_decimal(control.get("value"))
        if v is None or v < 0 or v > 100:
            return r
        candidates.append(_ceil(r * Fraction(v) / 100))

    min_usable = budget.get("minUsable")
    if min_usable is not None:
        m = exact_decimal(min_usable)
        if m is None or m < 0 or m > 100:
            return r
        if 0 < m <= 1:
            candidates.append(_ceil(r * Fraction(m)))
        elif m > 1:
            candidates.append(_ceil(r * Fraction(m) / 100))

    return max(candidates)


def host_for(rng: random.Random) -> str:
    """A host address from the documentation ranges (RFC 5737): never a routable one."""
    net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{net}.{rng.randint(1, 254)}"


def new_instance(app: SimApp, rng: random.Random, state: str = "RUNNING") -> SimInstance:
    """Add a fresh instance to ``app`` with the next free index and a new address."""
    index = app.next_index
    app.next_index += 1
    inst = SimInstance(
        instance_id=f"{app.app_id}.{index}",
        index=index,
        host_ip=host_for(rng),
        main_port=rng.randrange(8000, 9000),
        state=state,
    )
    app.instances[inst.instance_id] = inst
    return inst


def _replicas(rng: random.Random) -> int:
    # Most apps are small, a few are large: like a real fleet.
    roll = rng.random()
    if roll < 0.05:
        return 1
    if roll < 0.65:
        return rng.randint(2, 10)
    if roll < 0.90:
        return rng.randint(11, 30)
    return rng.randint(31, 50)


def _budget(rng: random.Random, replicas: int) -> dict[str, Any] | None:
    """A varied ``min_usable_info``: ratios 50–100, floors, minUsable in both forms, gaps."""
    if rng.random() < 0.01:
        return None
    budget: dict[str, Any] = {}
    if rng.random() < 0.9:
        value: Any = rng.choice((50, 60, 66, 70, 75, 80, 80, 80, 90, 100))
        if rng.random() < 0.1:
            value = float(value) + 0.5 if value < 100 else 100.0
        budget["instanceControlBudget"] = {"type": "MinAvailableRatio", "value": value}
    roll = rng.random()
    if roll < 0.3:
        budget["minUsable"] = rng.choice((0.5, 0.6, 0.7, 0.75, 0.8))
    elif roll < 0.55:
        budget["minUsable"] = rng.choice((14, 50, 60, 75, 80))
    elif roll < 0.65:
        budget["minUsable"] = 0
    if rng.random() < 0.6 or not budget:
        budget["replica_that_at_least_need_to_keep"] = rng.randint(0, max(0, replicas - 1))
    if rng.random() < 0.95:
        budget["replica"] = replicas
    return budget


def generate_app(rng: random.Random, number: int) -> SimApp:
    """One generated app, varied in every way DESIGN section 4 asks for."""
    app_id = f"app-{number:04d}"
    product = rng.choice(PRODUCTS)
    module = rng.choice(MODULES)
    cluster = rng.choice(CLUSTERS)
    replicas = _replicas(rng)
    meta: dict[str, Any] = {
        "pass_type": rng.choice(PASS_TYPES),
        "product": product,
        "module": module,
        "app_id": app_id,
        "cluster": cluster,
        "account_id": f"acct-{product}",
        "service_level": rng.choice((1, 1, 2, 2, 2, 3, 3, 4)),
        "bns": f"{module}.{product}.{cluster}",
        "disk_type": rng.choice(("ssd", "hdd", "nvme")),
        "disk_exclusive": rng.random() < 0.2,
        "limit_cpu_usage": rng.choice((50, 80, 100, 200)),
        "extend_join": rng.random() < 0.5,
        "shrink_join": rng.random() < 0.4,
        "extend_mask": rng.random() < 0.05,
        "shrink_mask": rng.random() < 0.1,
        "rescale_direction_prior": rng.choice(("extend", "shrink", "none")),
        "owner": f"owner-{rng.randint(1, 200):03d}",
        "manager": f"manager-{rng.randint(1, 40):02d}",
    }
    hard_limits = {
        "cpu": rng.random() < 0.7,
        "cpu_quota": rng.choice((200, 400, 800)),
        "cpu_limit": rng.choice((2, 4, 8)),
        "cpu_multiple": rng.choice((1.0, 1.5, 2.0)),
        "memory": rng.choice((2048, 4096, 8192)),
        "disk": rng.choice((20, 50, 100)),
    }
    app = SimApp(app_id=app_id, meta=meta, budget=_budget(rng, replicas), hard_limits=hard_limits)
    for _ in range(replicas):
        inst = new_instance(app, rng)
        # A few instances are already out of the ordinary, as in any real fleet.
        roll = rng.random()
        if roll < 0.01:
            inst.frozen = True
        elif roll < 0.02:
            app.disabled.add(inst.instance_id)
        elif roll < 0.025:
            inst.under_repair = True
        elif roll < 0.03:
            inst.migrating = True
    return app


def generate_fleet(apps: int, seed: int) -> dict[str, SimApp]:
    """``apps`` apps named ``app-0001``…, the same for the same seed."""
    rng = random.Random(seed)
    return {a.app_id: a for a in (generate_app(rng, n) for n in range(1, apps + 1))}
