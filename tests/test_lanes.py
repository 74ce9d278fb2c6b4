"""Interactive calls overtake bulk batches between slices, and calls that wait for the
pipeline run together (no Ray: plain threads)."""

import threading

import pytest

from preannotate.deployments.lanes import TOGETHER_TASKS, Lanes


def test_an_interactive_call_waits_for_at_most_the_running_bulk_slice() -> None:
    calls: list[str] = []
    first_slice_started = threading.Event()
    release = threading.Event()

    def annotate(tasks: list[dict]) -> list[dict]:
        calls.append(tasks[0]["lane"])
        if len(calls) == 1:
            first_slice_started.set()
            release.wait(10)
        return tasks

    lanes = Lanes(annotate, idle_slice=2, busy_slice=1)
    bulk = lanes.bulk_lane.submit(lanes.bulk, [{"lane": "bulk"}] * 8)
    assert first_slice_started.wait(10)
    interactive = lanes.interactive_lane.submit(lanes.interactive, [{"lane": "interactive"}])
    while not lanes._interactive_calls:  # the call is queued behind the running slice
        threading.Event().wait(0.001)
    release.set()
    assert interactive.result(10) == [{"lane": "interactive"}]
    assert len(bulk.result(10)) == 8
    assert calls == ["bulk", "interactive"] + ["bulk"] * 6  # after it, slices of one


def _queue_behind_a_running_call(lanes: Lanes, release: threading.Event, *calls: list[dict]):
    """Start a call that holds the pipeline until `release`, then the `calls`, which wait
    for it; returns their futures once all of them are waiting."""
    first = lanes.interactive_lane.submit(lanes.interactive, [{"n": "first"}])
    while not lanes._pipeline.locked():
        threading.Event().wait(0.001)
    futures = []
    for call in calls:  # one at a time, so they queue in this order
        futures.append(lanes.interactive_lane.submit(lanes.interactive, call))
        while len(lanes._waiting) < len(futures):
            threading.Event().wait(0.001)
    release.set()
    first.result(10)
    return futures


def test_calls_that_wait_for_the_pipeline_run_together_and_each_gets_its_own_answer() -> None:
    batches: list[list] = []
    release = threading.Event()

    def annotate(tasks: list[dict]) -> list[dict]:
        batches.append([t["n"] for t in tasks])
        if tasks[0]["n"] == "first":
            release.wait(10)
        return [{"answer": t["n"]} for t in tasks]

    lanes = Lanes(annotate)
    calls = [[{"n": 1}], [{"n": 2}, {"n": 3}], [{"n": 4}]]
    futures = _queue_behind_a_running_call(lanes, release, *calls)
    answers = [f.result(10) for f in futures]
    assert answers == [[{"answer": 1}], [{"answer": 2}, {"answer": 3}], [{"answer": 4}]]
    assert batches == [["first"], [1, 2, 3, 4]]  # one pipeline call for the three


def test_a_call_that_fails_the_shared_batch_fails_alone() -> None:
    release = threading.Event()

    def annotate(tasks: list[dict]) -> list[dict]:
        if tasks[0]["n"] == "first":
            release.wait(10)
        if any(t["n"] == "bad" for t in tasks):
            raise ValueError("a bad task")
        return tasks

    lanes = Lanes(annotate)
    good, bad, other = _queue_behind_a_running_call(
        lanes, release, [{"n": 1}], [{"n": "bad"}], [{"n": 2}]
    )
    assert good.result(10) == [{"n": 1}] and other.result(10) == [{"n": 2}]
    with pytest.raises(ValueError, match="a bad task"):
        bad.result(10)


def test_waiting_calls_join_a_batch_up_to_its_size_oldest_first() -> None:
    batches: list[list] = []
    release = threading.Event()

    def annotate(tasks: list[dict]) -> list[dict]:
        batches.append(sorted({t["n"] for t in tasks}, key=str))
        if tasks[0]["n"] == "first":
            release.wait(10)
        return tasks

    lanes = Lanes(annotate)
    half = TOGETHER_TASKS // 2
    calls = [[{"n": i}] * half for i in range(3)]  # three halves: two batches
    futures = _queue_behind_a_running_call(lanes, release, *calls)
    assert [len(f.result(10)) for f in futures] == [half] * 3
    assert batches == [["first"], [0, 1], [2]]


def test_a_pipeline_that_miscounts_or_exits_ends_every_waiting_call() -> None:
    """A pipeline that answers fewer predictions than tasks gives no call another's
    answers; one that raises SystemExit ends every call of its batch, and the lane
    stays usable."""
    release = threading.Event()
    exits = True

    def annotate(tasks: list[dict]) -> list[dict]:
        if tasks[0]["n"] == "first":
            release.wait(10)
            return tasks
        if exits:
            raise SystemExit("stopping")
        return tasks[1:]  # one answer short

    lanes = Lanes(annotate)
    for future in _queue_behind_a_running_call(lanes, release, [{"n": 1}], [{"n": 2}]):
        with pytest.raises(SystemExit):
            future.result(10)
    exits, release = False, threading.Event()
    for future in _queue_behind_a_running_call(lanes, release, [{"n": 1}], [{"n": 2}]):
        with pytest.raises(RuntimeError, match="gave 0 answers to 1 tasks"):
            future.result(10)
