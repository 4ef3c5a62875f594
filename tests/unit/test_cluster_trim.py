"""The trim decision: never an entry a node that still holds the log needs, never the newest
``keep_entries``; a node gone past the grace, or lagging past ``max_lag``, is let go (it will
install a checkpoint) and no longer holds the log."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tq.cluster.etcd import Etcd
from tq.cluster.log import ReplicatedLog
from tq.cluster.trim import Hold, LogTrimmer, TrimDecision, TrimPolicy, trim_point
from tq.errors import ValidationError

POLICY = TrimPolicy(keep_entries=10, max_lag=100, absent_grace_s=30.0)


def test_the_least_applied_live_node_holds_the_trim() -> None:
    holds = [Hold("a", 500), Hold("b", 420), Hold("c", 480)]
    assert trim_point(1, 500, holds, POLICY) == TrimDecision(420, "b", ())


def test_the_newest_entries_are_kept_even_when_every_node_applied_them() -> None:
    holds = [Hold("a", 500), Hold("b", 500)]
    assert trim_point(1, 500, holds, POLICY) == TrimDecision(491, None, ())
    assert trim_point(1, 5, holds, POLICY).below == 0  # fewer entries than the margin


def test_nothing_is_trimmed_when_the_bound_is_at_or_below_the_first_entry() -> None:
    assert trim_point(420, 500, [Hold("b", 420)], POLICY) == TrimDecision(0, "b", ())
    assert trim_point(0, 0, [], POLICY).below == 0  # an empty log


def test_an_absent_node_holds_the_trim_only_for_the_grace() -> None:
    within = [Hold("a", 500), Hold("b", 450, absent_for_s=29.0)]
    assert trim_point(1, 500, within, POLICY) == TrimDecision(450, "b", ())
    past = [Hold("a", 500), Hold("b", 450, absent_for_s=31.0)]
    assert trim_point(1, 500, past, POLICY) == TrimDecision(491, None, ("b",))


def test_a_node_lagging_past_max_lag_is_let_go_live_or_not() -> None:
    holds = [Hold("a", 500), Hold("slow", 399), Hold("never", 0, absent_for_s=1.0)]
    assert trim_point(1, 500, holds, POLICY) == TrimDecision(491, None, ("never", "slow"))
    assert trim_point(1, 500, [Hold("a", 500), Hold("b", 400)], POLICY).below == 400


@pytest.mark.parametrize(
    "bad",
    [
        {"keep_entries": 0},
        {"max_lag": 0},
        {"absent_grace_s": -1.0},
        {"absent_grace_s": float("nan")},
    ],
)
def test_a_bad_policy_is_refused_naming_the_field(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        TrimPolicy(**bad)  # type: ignore[arg-type]


holds = st.lists(
    st.builds(
        Hold,
        st.sampled_from("abcdefg"),
        st.integers(0, 1_000),
        st.none() | st.floats(0, 100),
    ),
    max_size=6,
    unique_by=lambda h: h.node_id,
)


@given(
    holds,
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.builds(TrimPolicy, st.integers(1, 300), st.integers(1, 800), st.floats(0, 60)),
)
def test_the_decision_never_takes_what_a_holding_node_needs(
    nodes: list[Hold], first: int, span: int, policy: TrimPolicy
) -> None:
    last = first + span if first else 0
    nodes = [Hold(h.node_id, min(h.applied_index, last), h.absent_for_s) for h in nodes]
    decision = trim_point(first, last, nodes, policy)
    let_go = {
        h.node_id
        for h in nodes
        if last - h.applied_index > policy.max_lag
        or (h.absent_for_s is not None and h.absent_for_s > policy.absent_grace_s)
    }
    assert set(decision.let_go) == let_go
    if decision.below:
        assert first < decision.below <= last - policy.keep_entries + 1
        for h in nodes:
            if h.node_id not in let_go:
                assert decision.below <= h.applied_index
    else:
        bound = min(
            [last - policy.keep_entries + 1]
            + [h.applied_index for h in nodes if h.node_id not in let_go]
        )
        assert first == 0 or bound <= first


def test_the_trim_loop_refuses_a_bad_interval() -> None:
    async def main() -> None:
        client = Etcd(["127.0.0.1:1"])  # never reached: the interval is refused first
        trimmer = LogTrimmer(client, "t", ReplicatedLog(client, "t"), [])
        with pytest.raises(ValidationError, match="interval"):
            await trimmer.run(0)

    asyncio.run(asyncio.wait_for(main(), 10))
