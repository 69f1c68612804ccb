"""A model of the Kubernetes HPA controller (autoscaling/v2) and of the metric pipeline that feeds it.

The controller part follows ``pkg/controller/podautoscaler`` (horizontal.go, replica_calculator.go): per-metric
proposal with a 10 % tolerance and the missing-pod rules of a Pods metric, stabilization windows over past
recommendations, and scale-rate policies chosen by ``selectPolicy``. The load part is a fluid queue per replica and
the lags of scraping, rule evaluation, adapter relisting and the HPA sync period, so a step of load shows how many
replicas are requested over time with the configured ``behavior``. Pure Python: no Pulumi, no cluster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from components.settings import ScalingRules

TOLERANCE = 0.1  # kube-controller-manager --horizontal-pod-autoscaler-tolerance
SYNC_PERIOD_SECONDS = 15  # --horizontal-pod-autoscaler-sync-period


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def desired_replicas(
    current: int, metric_value: float, target: float, min_replicas: int, max_replicas: int, tolerance: float = TOLERANCE
) -> int:
    """``ceil(current * metric / target)`` unless the ratio is within tolerance of 1, clamped to [min, max]."""
    if target <= 0:
        raise ValueError(f"target ({target}) must be > 0")
    ratio = metric_value / target
    proposal = current if abs(1.0 - ratio) <= tolerance else math.ceil(ratio * current)
    return _clamp(proposal, min_replicas, max_replicas)


def replica_proposal(
    current: int, pod_metrics: Mapping[str, float | None], target: float, tolerance: float = TOLERANCE
) -> int | None:
    """One Pods metric's proposal, as replica_calculator's calcPlainMetricReplicas makes it.

    ``pod_metrics`` holds every running pod of the target: its value, or None when the adapter returns nothing
    for it yet (a pod still loading models). None when no pod has a value: the HPA then cannot scale.
    """
    values = [v for v in pod_metrics.values() if v is not None]
    missing = len(pod_metrics) - len(values)
    if not values:
        return None
    ratio = sum(values) / len(values) / target
    if missing == 0:
        return current if abs(1.0 - ratio) <= tolerance else math.ceil(ratio * len(values))
    # Missing pods count as idle on a scale-up and as exactly on target on a scale-down: both damp the change.
    filled = values + [0.0 if ratio >= 1.0 else target] * missing
    new_ratio = sum(filled) / len(filled) / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return current
    proposal = math.ceil(new_ratio * len(filled))
    if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
        return current
    return proposal


@dataclass
class HorizontalPodAutoscaler:
    """The controller's per-HPA state: past recommendations and scale events, as horizontal.go keeps them."""

    min_replicas: int
    max_replicas: int
    scale_up: ScalingRules
    scale_down: ScalingRules
    _recommendations: list[tuple[float, int]] | None = None
    _up_events: list[tuple[float, int]] = field(default_factory=list)
    _down_events: list[tuple[float, int]] = field(default_factory=list)

    def reconcile(self, now: float, current: int, proposal: int | None) -> int:
        """The replica count the HPA writes to the Deployment's scale at time ``now`` (seconds)."""
        if current > self.max_replicas:
            desired = self.max_replicas
        elif current < self.min_replicas:
            desired = self.min_replicas
        elif proposal is None:
            return current  # ScalingActive=False: no metrics, no change
        else:
            desired = self._normalize(now, current, proposal)
        if desired > current:
            self._up_events.append((now, desired - current))
        elif desired < current:
            self._down_events.append((now, current - desired))
        return desired

    def _normalize(self, now: float, current: int, proposal: int) -> int:
        if self._recommendations is None:
            self._recommendations = [(now, current)] if self.scale_down.stabilization_window_seconds > 0 else []
        stabilized = self._stabilize(now, current, proposal)
        return self._rate_limited(now, current, stabilized)

    def _stabilize(self, now: float, current: int, proposal: int) -> int:
        """Scale up to the lowest, down to the highest recommendation inside each direction's window."""
        assert self._recommendations is not None
        up_cutoff = now - self.scale_up.stabilization_window_seconds
        down_cutoff = now - self.scale_down.stabilization_window_seconds
        up = min([proposal] + [r for t, r in self._recommendations if t > up_cutoff])
        down = max([proposal] + [r for t, r in self._recommendations if t > down_cutoff])
        self._recommendations = [(t, r) for t, r in self._recommendations if t >= min(up_cutoff, down_cutoff)]
        self._recommendations.append((now, proposal))
        return min(max(current, up), down)

    def _rate_limited(self, now: float, current: int, desired: int) -> int:
        if desired > current:
            limit = max(current, self._limit(now, current, self.scale_up, up=True))
            return min(desired, self.max_replicas, limit)
        if desired < current:
            limit = min(current, self._limit(now, current, self.scale_down, up=False))
            return max(desired, self.min_replicas, limit)
        return desired

    def _limit(self, now: float, current: int, rules: ScalingRules, *, up: bool) -> int:
        """The furthest the policies allow from the replica count at the start of each policy's period."""
        if rules.select_policy == "Disabled" or not rules.policies:
            return current
        proposals = []
        for policy in rules.policies:
            added = sum(c for t, c in self._up_events if t > now - policy.period_seconds)
            removed = sum(c for t, c in self._down_events if t > now - policy.period_seconds)
            start = current - added + removed
            if policy.type == "Pods":
                proposals.append(start + policy.value if up else start - policy.value)
            elif up:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        # "Max" picks the policy allowing the biggest change: the highest limit up, the lowest limit down.
        biggest_change = (max if up else min)(proposals)
        smallest_change = (min if up else max)(proposals)
        return biggest_change if rules.select_policy == "Max" else smallest_change


# --------------------------------------------------------------------------------------------------------------
# The load side: a fluid queue behind least-request balancing, and the lags between Triton and the HPA.


@dataclass(frozen=True)
class Pipeline:
    """Where the HPA's view of queue time lags behind Triton's (seconds)."""

    scrape_interval: int = 15
    rule_interval: int = 15
    rate_window: int = 60
    adapter_relist: int = 30
    hpa_sync: int = SYNC_PERIOD_SECONDS


@dataclass(frozen=True)
class Workload:
    """Per-replica capacity and what a new replica costs before it serves."""

    capacity_rps: float = 200.0  # requests/s one replica sustains
    service_time_ms: float = 5.0
    pending_seconds: int = 20  # scheduling and image pull (the HPA ignores Pending pods)
    startup_seconds: int = 60  # model download and load until /v2/health/ready
    request_timeout_seconds: float = 60.0  # clients give up; the queue never holds more than this


@dataclass(frozen=True)
class Tick:
    """One HPA sync: what the load was, what Triton saw, what the HPA saw, and what it asked for."""

    time: int
    load_rps: float
    queue_time_ms: float  # true average queue time in the last second
    observed_ms: float | None  # what the HPA read (recorded rule value)
    replicas: int  # the Deployment's spec.replicas after this sync
    serving: int  # replicas ready and taking traffic


@dataclass
class _Pod:
    created: int
    metric_visible: int | None = None


def _queue_seconds(load: float, serving: int, backlog: float, w: Workload) -> tuple[float, float, float]:
    """(served requests, queue seconds per served request, new backlog) for one second of load."""
    capacity = serving * w.capacity_rps
    if capacity <= 0:
        return 0.0, 0.0, min(backlog + load, load * w.request_timeout_seconds)
    work = backlog + load
    served = min(work, capacity)
    left = min(work - served, capacity * w.request_timeout_seconds)
    utilisation = min(load / capacity, 0.95)
    wait = w.service_time_ms / 1000 * utilisation / (1 - utilisation) + (backlog + left) / 2 / capacity
    return served, wait, left


def simulate(
    load: list[float],
    hpa: HorizontalPodAutoscaler,
    target_us: float,
    initial_replicas: int,
    workload: Workload = Workload(),
    pipeline: Pipeline = Pipeline(),
) -> list[Tick]:
    """Replicas requested over time for ``load`` (requests/s, one value per second)."""
    pods = [_Pod(created=-10_000, metric_visible=-10_000) for _ in range(initial_replicas)]
    queue_us = success = backlog = 0.0
    samples: list[tuple[int, float, float]] = []
    recorded: float | None = None
    ticks: list[Tick] = []
    for now, rps in enumerate(load):
        serving = sum(1 for p in pods if now >= p.created + workload.pending_seconds + workload.startup_seconds)
        served, wait, backlog = _queue_seconds(rps, serving, backlog, workload)
        queue_us += served * wait * 1e6
        success += served
        if now % pipeline.scrape_interval == 0:
            samples.append((now, queue_us, success))
        if now % pipeline.rule_interval == 0:
            recorded = _recorded(samples, now, pipeline.rate_window, recorded)
        if now % pipeline.adapter_relist == 0:
            _relist(pods, now, workload, pipeline)
        if now % pipeline.hpa_sync == 0 and now > 0:
            current = len(pods)
            proposal = replica_proposal(current, _pod_metrics(pods, now, recorded, workload), target_us)
            wanted = hpa.reconcile(now, current, proposal)
            pods = pods[:wanted] + [_Pod(created=now) for _ in range(wanted - current)]
            ticks.append(Tick(now, rps, wait * 1000, None if recorded is None else recorded / 1000, wanted, serving))
    return ticks


def _recorded(samples: list[tuple[int, float, float]], now: int, window: int, last: float | None) -> float | None:
    """The recording rule: increase(queue)/clamp_min(increase(success), 1) over the window (needs two samples)."""
    inside = [s for s in samples if now - window < s[0] <= now]
    if len(inside) < 2:
        return last
    (t0, q0, s0), (t1, q1, s1) = inside[0], inside[-1]
    extrapolate = window / (t1 - t0)  # increase() scales both counters alike, so the ratio keeps its value
    return (q1 - q0) * extrapolate / max((s1 - s0) * extrapolate, 1.0)


def _relist(pods: list[_Pod], now: int, w: Workload, p: Pipeline) -> None:
    """The adapter finds a new pod's series once two scrapes of it were recorded by a rule evaluation."""
    for pod in pods:
        ready = pod.created + w.pending_seconds + w.startup_seconds
        first_scrape = math.ceil(ready / p.scrape_interval) * p.scrape_interval
        recorded_at = math.ceil((first_scrape + p.scrape_interval) / p.rule_interval) * p.rule_interval
        if pod.metric_visible is None and now >= recorded_at:
            pod.metric_visible = now


def _pod_metrics(pods: list[_Pod], now: int, recorded: float | None, w: Workload) -> dict[str, float | None]:
    """Running pods (Pending ones are ignored by the HPA) with the value the adapter returns, or None."""
    return {
        f"pod-{i}": (recorded if pod.metric_visible is not None and recorded is not None else None)
        for i, pod in enumerate(pods)
        if now >= pod.created + w.pending_seconds
    }


def step_load(before: float, after: float, step_at: int, back_at: int, total: int) -> list[float]:
    """``before`` requests/s, ``after`` from ``step_at`` until ``back_at``, then ``before`` again."""
    return [after if step_at <= t < back_at else before for t in range(total)]


def format_ticks(ticks: list[Tick], every: int = 1) -> str:
    """A plain table of a simulation, one line per ``every`` HPA syncs."""
    lines = ["   t(s)  load(rps)  queue(ms)  HPA sees(ms)  replicas  serving"]
    for tick in ticks[::every]:
        seen = "-" if tick.observed_ms is None else f"{tick.observed_ms:.1f}"
        lines.append(
            f"{tick.time:7d} {tick.load_rps:10.0f} {tick.queue_time_ms:10.1f} {seen:>13} "
            f"{tick.replicas:9d} {tick.serving:8d}"
        )
    return "\n".join(lines)
