"""Two lanes over one loaded pipeline: interactive calls go first.

A bulk batch runs in slices and, before each slice, waits while an interactive call is
waiting or running; an interactive call therefore waits for at most the slice already
running, never for a whole bulk batch (docs/architecture.md, "Interactive predict").
Slices are large while nobody calls interactively (throughput) and small for a while after
someone did (latency). The pipeline itself runs one batch at a time: interactive calls that
arrive while it is busy run together once it is free, oldest first, as one batch (a
pipeline call over several documents costs less than one call per document), and a lone
call runs at once, alone, as before.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Annotate = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
IDLE_SLICE = 64
BUSY_SLICE = 1
BUSY_FOR_S = 5.0
"""How long after an interactive call bulk work keeps to small slices."""
TOGETHER_TASKS = 64
"""Waiting interactive calls join one batch until it holds this many tasks (a call is
never split), so the first of them waits for little more than a bulk slice's worth."""
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


class Lanes:
    def __init__(
        self, annotate: Annotate, idle_slice: int = IDLE_SLICE, busy_slice: int = BUSY_SLICE
    ):
        self._annotate = annotate
        self.idle_slice, self.busy_slice = idle_slice, busy_slice
        self._last_interactive = float("-inf")
        self._pipeline = threading.Lock()
        self._turn = threading.Condition()
        self._interactive_calls = 0
        self._waiting: deque[_Call] = deque()
        self._leading = False
        """Whether an interactive call leads (runs batches); the others sleep until woken."""
        self.interactive_lane = ThreadPoolExecutor(
            INTERACTIVE_THREADS, thread_name_prefix="interactive"
        )
        self.bulk_lane = ThreadPoolExecutor(1, thread_name_prefix="bulk")

    def interactive(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The call's predictions. If no other interactive batch runs, the call leads: it
        runs the oldest waiting calls (its own among them) as one batch, wakes each of
        them, and hands the lead to the oldest call still waiting. Otherwise it sleeps
        until a batch has answered it or the lead is handed to it."""
        call = _Call(tasks)
        with self._turn:
            self._interactive_calls += 1
            self._last_interactive = time.monotonic()
            self._waiting.append(call)
            leads = not self._leading
            self._leading = True
        try:
            while not call.done:
                if not leads:
                    call.wake.wait()
                    call.wake.clear()
                    if call.done:
                        break
                with self._turn:
                    batch = self._next_batch()
                try:
                    with self._pipeline:  # after the bulk slice that may be running
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
        finally:
            with self._turn:
                self._interactive_calls -= 1
                self._turn.notify_all()

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

    def bulk(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < len(tasks):
            with self._turn:
                self._turn.wait_for(lambda: self._interactive_calls == 0)
                recent = time.monotonic() - self._last_interactive < BUSY_FOR_S
            size = self.busy_slice if recent else self.idle_slice
            with self._pipeline:
                out += self._annotate(tasks[len(out) : len(out) + size])
        return out
