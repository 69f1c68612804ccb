"""The HPA controller model: formula, tolerance, missing pods, policies, stabilization, and a step of load."""

from __future__ import annotations

from itertools import pairwise

import pytest

from components.hpa_model import (
    HorizontalPodAutoscaler,
    Tick,
    desired_replicas,
    format_ticks,
    replica_proposal,
    simulate,
    step_load,
)
from components.settings import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, ScalingPolicy, ScalingRules

TARGET_US = 50_000.0
NO_WINDOW_UP = ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)))
NO_WINDOW_DOWN = ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15),))


def _hpa(
    min_r: int = 1, max_r: int = 20, up: ScalingRules = NO_WINDOW_UP, down: ScalingRules = NO_WINDOW_DOWN
) -> HorizontalPodAutoscaler:
    return HorizontalPodAutoscaler(min_r, max_r, up, down)


@pytest.mark.parametrize(
    ("current", "metric", "expected"),
    [
        (4, 100_000, 8),  # twice the target: twice the replicas
        (3, 60_000, 4),  # ceil(3 * 1.2) = 4
        (4, 54_000, 4),  # 8 % over target: inside the 10 % tolerance
        (4, 45_500, 4),  # 9 % under: inside
        (4, 40_000, 4),  # ceil(4 * 0.8) = 4 still
        (4, 20_000, 2),
        (4, 0, 1),  # idle: down to min
        (2, 1_000_000, 10),  # clamped to max
    ],
)
def test_desired_replicas_is_ceil_current_times_ratio_within_bounds(current: int, metric: float, expected: int) -> None:
    assert desired_replicas(current, metric, TARGET_US, 1, 10) == expected


def test_desired_replicas_rejects_a_zero_target() -> None:
    with pytest.raises(ValueError, match="target"):
        desired_replicas(1, 1.0, 0, 1, 2)


def test_pods_still_starting_do_not_multiply_the_scale_up() -> None:
    # Two pods at 3x target, two new pods without metrics yet (counted idle): 1.5x over four pods -> 6, the
    # same as the measured load alone asks for, not 3x of four pods.
    metrics = {"a": 150_000.0, "b": 150_000.0, "c": None, "d": None}
    assert replica_proposal(4, metrics, TARGET_US) == 6
    assert replica_proposal(2, {"a": 150_000.0, "b": 150_000.0}, TARGET_US) == 6


def test_missing_pods_that_would_reverse_the_direction_keep_the_current_count() -> None:
    # 1.5x on one pod, three pods missing: as idle the ratio drops below 1, so the HPA holds rather than shrinks.
    assert replica_proposal(4, {"a": 75_000.0, "b": None, "c": None, "d": None}, TARGET_US) == 4


def test_missing_pods_count_as_on_target_on_scale_down() -> None:
    # One pod idle, one missing (assumed at target): ratio 0.5 over two pods -> 1.
    assert replica_proposal(2, {"a": 0.0, "b": None}, TARGET_US) == 1


def test_no_metrics_at_all_means_no_proposal_and_no_change() -> None:
    assert replica_proposal(3, {"a": None}, TARGET_US) is None
    assert _hpa().reconcile(15, 3, None) == 3


def test_scale_up_policy_max_takes_the_biggest_step_and_min_the_smallest() -> None:
    policies = (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15))
    assert _hpa(up=ScalingRules(0, "Max", policies)).reconcile(15, 2, 20) == 6  # max(2*2, 2+4)
    assert _hpa(up=ScalingRules(0, "Min", policies)).reconcile(15, 2, 20) == 4  # min(2*2, 2+4)
    assert _hpa(up=ScalingRules(0, "Disabled", policies)).reconcile(15, 2, 20) == 2


def test_scale_up_within_one_period_counts_what_was_already_added() -> None:
    hpa = _hpa(up=ScalingRules(0, "Max", (ScalingPolicy("Pods", 2, 60),)))
    assert hpa.reconcile(0, 2, 10) == 4
    assert hpa.reconcile(15, 4, 10) == 4  # 2 pods already added in the last 60 s
    assert hpa.reconcile(45, 4, 10) == 4
    assert hpa.reconcile(61, 4, 10) == 6  # the first event left the period


def test_scale_down_waits_for_the_stabilization_window_then_one_pod_per_minute() -> None:
    hpa = _hpa(min_r=2, up=DEFAULT_SCALE_UP, down=DEFAULT_SCALE_DOWN)
    replicas, history = 8, []
    for now in range(15, 15 * 50, 15):
        replicas = hpa.reconcile(now, replicas, 2)
        history.append((now, replicas))
    first_drop = next(t for t, r in history if r < 8)
    assert first_drop > 300, "the 300 s window keeps the highest recent recommendation (8)"
    drops = [t for (_, before), (t, r) in pairwise(history) if r < before]
    assert all(b - a >= 60 for a, b in pairwise(drops)), drops
    assert history[-1][1] == 2


def test_scale_up_stabilization_uses_the_lowest_recent_recommendation() -> None:
    hpa = _hpa(up=ScalingRules(60, "Max", (ScalingPolicy("Pods", 10, 15),)))
    assert hpa.reconcile(15, 2, 3) == 3
    assert hpa.reconcile(30, 3, 9) == 3  # 3 was recommended 15 s ago, inside the 60 s window
    assert hpa.reconcile(90, 3, 9) == 9  # only 9s remain in the window


def test_bounds_win_over_metrics() -> None:
    assert _hpa(min_r=3, max_r=5).reconcile(15, 1, 1) == 3
    assert _hpa(min_r=3, max_r=5).reconcile(15, 9, 9) == 5


def _prod_step() -> list[Tick]:
    hpa = HorizontalPodAutoscaler(2, 8, DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN)
    return simulate(step_load(300, 1200, 60, 600, 1500), hpa, TARGET_US, initial_replicas=2)


def test_a_step_of_load_is_answered_at_the_next_sync_and_served_once_new_pods_are_ready() -> None:
    ticks = _prod_step()
    print("\n" + format_ticks(ticks))
    first_up = next(t for t in ticks if t.replicas > 2)
    assert first_up.time <= 60 + 2 * 15, "scale-up within two HPA syncs of the step"
    assert first_up.replicas == 6, "default policy: max(+100 %, +4 pods) per 15 s"
    assert max(t.replicas for t in ticks) == 8
    recovered = next(t for t in ticks if t.time > 60 and t.serving >= 6 and t.queue_time_ms < 50)
    assert recovered.time < 300
    drops = [t.time for prev, t in pairwise(ticks) if t.replicas < prev.replicas]
    assert all(b - a >= 60 for a, b in pairwise(drops))
    assert ticks[-1].replicas == 2


def test_without_policies_limiting_it_the_same_step_overshoots_less_slowly() -> None:
    """The behavior matters: a single pod per minute scale-up leaves the queue saturated for minutes."""
    slow_up = ScalingRules(0, "Max", (ScalingPolicy("Pods", 1, 60),))
    hpa = HorizontalPodAutoscaler(2, 8, slow_up, DEFAULT_SCALE_DOWN)
    ticks = simulate(step_load(300, 1200, 60, 600, 900), hpa, TARGET_US, initial_replicas=2)
    saturated = [t for t in ticks if 60 < t.time < 600 and t.queue_time_ms > 1000]
    fast = [t for t in _prod_step() if 60 < t.time < 600 and t.queue_time_ms > 1000]
    assert len(saturated) > 2 * len(fast)
