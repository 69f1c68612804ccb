"""Properties of the arithmetic every setting relies on, over many generated inputs (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.hpa_model import desired_replicas
from components.triton_cluster import rollout_timeout_seconds
from model_pipeline.syntax import duration_seconds, quantity_value

BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@given(st.integers(0, 10**6), st.sampled_from(sorted({**BINARY, **DECIMAL})))
def test_a_quantity_is_its_number_times_its_unit(n: int, unit: str) -> None:
    assert quantity_value(f"{n}{unit}") == n * {**BINARY, **DECIMAL}[unit]


@given(st.integers(1, 10**6))
def test_millicores_equal_the_same_amount_written_in_cores(milli: int) -> None:
    """Found by this test: as floats, 9m and 0.009 differed, so a request could exceed its equal limit."""
    cores = f"{milli // 1000}.{milli % 1000:03d}"
    assert quantity_value(f"{milli}m") == quantity_value(cores)
    assert quantity_value(f"{milli}m") < quantity_value(f"{milli + 1}m")


@given(
    st.lists(
        st.tuples(st.integers(1, 999), st.sampled_from(list(UNITS))), min_size=1, max_size=4, unique_by=lambda p: p[1]
    )
)
def test_a_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]]) -> None:
    ordered = sorted(parts, key=lambda p: -UNITS[p[1]])  # Prometheus wants the largest unit first
    text = "".join(f"{n}{unit}" for n, unit in ordered)
    assert duration_seconds(text) == sum(n * UNITS[unit] for n, unit in ordered)


@given(
    st.integers(1, 64),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0.001, 1e5),
    st.integers(1, 32),
    st.integers(0, 32),
)
def test_the_hpa_never_leaves_its_bounds_and_moves_with_the_metric(
    current: int, metric: float, target: float, low: int, span: int
) -> None:
    high = low + span
    wanted = desired_replicas(current, metric, target, low, high)
    assert low <= wanted <= high
    if metric > target * 1.1 and current < high:
        assert wanted >= min(current, high) and wanted >= low
    if metric < target * 0.9 and current > low:
        assert wanted <= max(current, low)


@given(st.integers(1, 64), st.integers(30, 7200), st.integers(0, 8), st.integers(0, 8))
def test_the_rollout_wait_covers_every_batch_of_pods(replicas: int, budget: int, surge: int, unavailable: int) -> None:
    from components.gpu_stack import gpu_placement
    from components.model_repository import RepositoryAccess
    from components.settings import GpuSettings, TritonSettings
    from components.triton_cluster import TritonClusterArgs

    if surge + unavailable == 0:
        unavailable = 1
    settings = TritonSettings(max_surge=surge, max_unavailable=unavailable, startup_budget_seconds=budget)
    args = TritonClusterArgs(
        settings=settings,
        repository=RepositoryAccess(uri="s3://m/d", region="us-east-1", models=("m",)),
        placement=gpu_placement(GpuSettings()),
        rollout_replicas=replicas,
    )
    batches = -(-replicas // (surge + unavailable))
    assert rollout_timeout_seconds(args) == batches * budget + 300
    assert rollout_timeout_seconds(args) >= budget + 300
