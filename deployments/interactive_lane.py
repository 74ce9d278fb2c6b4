"""The interactive lane of a replica: calls that wait for its pipeline run together.

The pipeline runs one batch at a time: interactive calls that arrive while it is busy run
together once it is free, oldest first, as one batch (a pipeline call over several
documents costs less than one call per document), and a lone call runs at once, alone.
Bulk batches do not wait here: they run in the replica's bulk process
(`bulk_process.py`), so an interactive call never waits for one.
"""

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Annotate = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
TOGETHER_TASKS = 64
"""Waiting interactive calls join one batch until it holds this many tasks (a call is
never split), so the first of them does not wait for a long batch."""
INTERACTIVE_THREADS = 16
"""Interactive calls that can wait for the pipeline at once, and so run together."""


@dataclass
class _Call:
    """An interactive call: its tasks, then its predictions or the error it raised."""

    tasks: list[dict[str, Any]]
    result: list[dict[str, Any]] | None = None
    error: BaseException | None = None
    wake: threading.Event = field(default_factory=threading.Event)
    """Set when a batch answered the call, or when the lead passes to it."""

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class InteractiveLane:
    def __init__(self, annotate: Annotate):
        self._annotate = annotate
        self._turn = threading.Lock()
        self._waiting: deque[_Call] = deque()
        self._leading = False
        """Whether an interactive call leads (runs batches); the others sleep until woken."""
        self.threads = ThreadPoolExecutor(INTERACTIVE_THREADS, thread_name_prefix="interactive")

    def __call__(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The call's predictions. If no other interactive batch runs, the call leads: it
        runs the oldest waiting calls (its own among them) as one batch, wakes each of
        them, and hands the lead to the oldest call still waiting. Otherwise it sleeps
        until a batch has answered it or the lead is handed to it."""
        call = _Call(tasks)
        with self._turn:
            self._waiting.append(call)
            leads = not self._leading
            self._leading = True
        while not call.done:
            if not leads:
                call.wake.wait()
                call.wake.clear()
                if call.done:
                    break
            with self._turn:
                batch = self._next_batch()
            try:
                self._run_together(batch)
            finally:
                with self._turn:
                    for answered in batch:
                        answered.wake.set()
                    if self._waiting:
                        self._waiting[0].wake.set()  # the lead passes on
                    else:
                        self._leading = False
            leads = False
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _next_batch(self) -> list[_Call]:
        """The oldest waiting calls, up to `TOGETHER_TASKS` tasks (at least one call);
        called holding `_turn`."""
        batch: list[_Call] = []
        size = 0
        while self._waiting and (not batch or size + len(self._waiting[0].tasks) <= TOGETHER_TASKS):
            batch.append(self._waiting.popleft())
            size += len(batch[-1].tasks)
        return batch

    def _run_together(self, batch: list[_Call]) -> None:
        """One pipeline call for the batch; if it raises, each call again alone, so that
        one call's failure stays its own. Every call of the batch ends done."""
        tasks = [task for call in batch for task in call.tasks]
        try:
            found = self._annotate(tasks)
            if len(found) != len(tasks):
                raise RuntimeError(f"the pipeline gave {len(found)} answers to {len(tasks)} tasks")
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for call in batch:
                    self._run_together([call])
            return
        except BaseException as exc:  # the process is ending: no call waits for ever
            for call in batch:
                call.error = exc
            raise
        start = 0
        for call in batch:
            call.result = found[start : start + len(call.tasks)]
            start += len(call.tasks)
