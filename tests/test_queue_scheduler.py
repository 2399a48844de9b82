"""The scheduler alone: fair turns, priorities, limits, batching (pure Python, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import QueueLimitError
from engine.jobs.fairness import Entry, Limits, Scheduler


def run_all(s: Scheduler, batch_size: int = 1) -> list[str]:
    """Drain the scheduler one batch at a time, finishing each batch at once."""
    out: list[str] = []
    while len(s):
        batch = s.next_batch(batch_size)
        assert batch, "a non-empty queue must always yield a batch when nothing runs"
        for e in batch:
            out.append(e.job_id)
            s.finish(e.job_id)
    return out


def big_limits(**kw: int) -> Limits:
    base = dict(max_per_user=1000, max_running_per_user=1000, max_total=10_000, batch_size=1)
    base.update(kw)
    return Limits(**base)


def test_round_robin_across_users_keeps_each_users_order() -> None:
    s = Scheduler(big_limits())
    for i in range(3):
        s.add(Entry(f"a{i}", user_id=1))
    for i in range(2):
        s.add(Entry(f"b{i}", user_id=2))
    s.add(Entry("c0", user_id=3))
    assert s.order() == ["a0", "b0", "c0", "a1", "b1", "a2"]
    assert run_all(s) == ["a0", "b0", "c0", "a1", "b1", "a2"]


def test_newcomer_waits_at_most_one_job_per_active_user() -> None:
    s = Scheduler(big_limits())
    for i in range(100):
        s.add(Entry(f"hog{i}", user_id=1))
    for user in (2, 3, 4):
        for i in range(5):
            s.add(Entry(f"u{user}-{i}", user_id=user))
    # Some jobs have already run when the newcomer arrives.
    for _ in range(7):
        s.finish(s.next_batch(1)[0].job_id)
    position = s.add(Entry("new", user_id=99))
    assert position <= 5  # at most 4 jobs (one per active user) ahead of it
    ran_before = run_all(s).index("new")
    assert ran_before == position - 1
    assert ran_before <= 4


def test_higher_priority_runs_first_then_round_robin() -> None:
    s = Scheduler(big_limits())
    s.add(Entry("grid1", user_id=1))
    s.add(Entry("grid2", user_id=2))
    s.add(Entry("up1", user_id=1, priority=1))
    s.add(Entry("up2", user_id=1, priority=1))
    s.add(Entry("up3", user_id=2, priority=1))
    assert s.position("up1") == 1
    # User 1 had the last upscale turn, so user 2's grid comes before user 1's.
    assert s.position("grid2") == 4 and s.position("grid1") == 5
    assert run_all(s) == ["up1", "up3", "up2", "grid2", "grid1"]


def test_priority_order_drained_matches_order() -> None:
    s = Scheduler(big_limits())
    s.add(Entry("grid1", user_id=1))
    s.add(Entry("grid2", user_id=2))
    s.add(Entry("up1", user_id=1, priority=1))
    s.add(Entry("up2", user_id=1, priority=1))
    s.add(Entry("up3", user_id=2, priority=1))
    expected = s.order()
    assert expected[:3] == ["up1", "up3", "up2"]
    assert run_all(s) == expected


def test_per_user_limit_message_names_limit_and_count() -> None:
    s = Scheduler(Limits(max_per_user=2, max_running_per_user=1, max_total=100))
    s.add(Entry("a", user_id=1))
    s.add(Entry("b", user_id=1))
    with pytest.raises(QueueLimitError) as info:
        s.add(Entry("c", user_id=1))
    assert "at most 2" in str(info.value) and "you have 2 waiting" in str(info.value)
    with pytest.raises(QueueLimitError, match="makes 3 more"):
        s.check(5, count=3)
    s.add(Entry("d", user_id=2))  # other users are not affected
    assert "c" not in s and len(s) == 3


def test_global_cap_message() -> None:
    s = Scheduler(Limits(max_per_user=10, max_running_per_user=1, max_total=3))
    for i in range(3):
        s.add(Entry(f"j{i}", user_id=i))
    with pytest.raises(QueueLimitError, match=r"at most 3 waiting jobs and has 3"):
        s.add(Entry("x", user_id=9))


def test_resumed_jobs_bypass_limits() -> None:
    s = Scheduler(Limits(max_per_user=1, max_running_per_user=1, max_total=1))
    s.add(Entry("a", user_id=1))
    s.add(Entry("b", user_id=1), enforce_limits=False)
    assert s.order() == ["a", "b"]


def test_running_limit_lets_others_go_ahead() -> None:
    s = Scheduler(Limits(max_per_user=10, max_running_per_user=1, max_total=100, batch_size=1))
    s.add(Entry("a0", user_id=1))
    s.add(Entry("a1", user_id=1))
    s.add(Entry("b0", user_id=2))
    first = s.next_batch()
    assert [e.job_id for e in first] == ["a0"]
    # a0 still runs (e.g. on another worker): user 1 is at its limit, so b0 goes next.
    assert [e.job_id for e in s.next_batch()] == ["b0"]
    assert s.next_batch() == []  # a1 must wait for a0
    s.finish("a0")
    assert [e.job_id for e in s.next_batch()] == ["a1"]


def test_batches_take_same_key_in_fair_order_and_respect_running_cap() -> None:
    s = Scheduler(Limits(max_per_user=10, max_running_per_user=2, max_total=100, batch_size=4))
    for i in range(4):
        s.add(Entry(f"a{i}", user_id=1, batch_key="k"))
    s.add(Entry("b0", user_id=2, batch_key="other"))
    s.add(Entry("c0", user_id=3, batch_key="k"))
    batch = [e.job_id for e in s.next_batch()]
    assert batch == ["a0", "c0", "a1"]  # b0 has another key; user 1 capped at 2 running
    for job in batch:
        s.finish(job)
    assert [e.job_id for e in s.next_batch()] == ["b0"]


def test_unbatchable_jobs_run_alone() -> None:
    s = Scheduler(big_limits(batch_size=4))
    s.add(Entry("u1", user_id=1, batch_key=None))
    s.add(Entry("u2", user_id=2, batch_key=None))
    assert [e.job_id for e in s.next_batch()] == ["u1"]


def test_remove_and_requeue() -> None:
    s = Scheduler(big_limits())
    for job in ("a0", "a1"):
        s.add(Entry(job, user_id=1))
    s.add(Entry("b0", user_id=2))
    assert s.remove("a1") is not None
    assert s.remove("a1") is None
    assert s.per_user() == {1: 1, 2: 1}
    picked = s.next_batch()[0]
    assert s.is_running(picked.job_id) and s.per_user() == {1: 1, 2: 1}
    s.requeue(picked.job_id)
    assert picked.job_id in s and s.order()[0] in {"a0", "b0"}
    assert sorted(run_all(s)) == ["a0", "b0"]


ops = st.lists(
    st.tuples(st.sampled_from(["add", "add", "add", "pick", "remove"]), st.integers(0, 4), st.integers(0, 2)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_position_agrees_with_order_and_picks(script: list[tuple[str, int, int]]) -> None:
    """Whatever happens, position() is the index in order(), and picks follow order()."""
    s = Scheduler(big_limits())
    n = 0
    for op, user, prio in script:
        if op == "add":
            s.add(Entry(f"j{n}", user_id=user, priority=prio))
            n += 1
        elif op == "remove" and len(s):
            s.remove(s.order()[-1 - user % len(s)])
        elif op == "pick" and len(s):
            expected = s.order()[0]
            got = s.next_batch(1)[0].job_id
            assert got == expected
            s.finish(got)
        order = s.order()
        assert [s.position(j) for j in order] == list(range(1, len(order) + 1))
        assert s.positions() == {j: i for i, j in enumerate(order, start=1)}
    expected = s.order()
    assert run_all(s) == expected
