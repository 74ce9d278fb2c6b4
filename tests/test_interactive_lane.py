"""Interactive calls that wait for the pipeline run together, each with its own answer
(no Ray: plain threads)."""

import threading

import pytest

from preannotate.deployments.interactive_lane import TOGETHER_TASKS, InteractiveLane


def _queue_behind_a_running_call(
    lane: InteractiveLane, release: threading.Event, *calls: list[dict]
):
    """Start a call that holds the pipeline until `release`, then the `calls`, which wait
    for it; returns their futures once all of them are waiting."""
    first = lane.threads.submit(lane, [{"n": "first"}])
    while not lane._leading or lane._waiting:  # until it took itself as its batch
        threading.Event().wait(0.001)
    futures = []
    for call in calls:  # one at a time, so they queue in this order
        futures.append(lane.threads.submit(lane, call))
        while len(lane._waiting) < len(futures):
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

    lane = InteractiveLane(annotate)
    calls = [[{"n": 1}], [{"n": 2}, {"n": 3}], [{"n": 4}]]
    futures = _queue_behind_a_running_call(lane, release, *calls)
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

    lane = InteractiveLane(annotate)
    good, bad, other = _queue_behind_a_running_call(
        lane, release, [{"n": 1}], [{"n": "bad"}], [{"n": 2}]
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

    lane = InteractiveLane(annotate)
    half = TOGETHER_TASKS // 2
    calls = [[{"n": i}] * half for i in range(3)]  # three halves: two batches
    futures = _queue_behind_a_running_call(lane, release, *calls)
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

    lane = InteractiveLane(annotate)
    for future in _queue_behind_a_running_call(lane, release, [{"n": 1}], [{"n": 2}]):
        with pytest.raises(SystemExit):
            future.result(10)
    exits, release = False, threading.Event()
    for future in _queue_behind_a_running_call(lane, release, [{"n": 1}], [{"n": 2}]):
        with pytest.raises(RuntimeError, match="gave 0 answers to 1 tasks"):
            future.result(10)
