"""Interactive calls overtake bulk batches between slices (no Ray: plain threads)."""

import threading

from preannotate.deployments.lanes import Lanes


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
