"""Two lanes over one loaded pipeline: interactive calls go first.

A bulk batch runs in slices and, before each slice, waits while an interactive call is
waiting or running; an interactive call therefore waits for at most the slice already
running, never for a whole bulk batch (docs/architecture.md, "Interactive predict").
Slices are large while nobody calls interactively (throughput) and small for a while after
someone did (latency). The pipeline itself runs one call at a time.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Annotate = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
IDLE_SLICE = 64
BUSY_SLICE = 1
BUSY_FOR_S = 5.0
"""How long after an interactive call bulk work keeps to small slices."""


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
        self.interactive_lane = ThreadPoolExecutor(1, thread_name_prefix="interactive")
        self.bulk_lane = ThreadPoolExecutor(1, thread_name_prefix="bulk")

    def interactive(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self._turn:
            self._interactive_calls += 1
            self._last_interactive = time.monotonic()
        try:
            with self._pipeline:
                return self._annotate(tasks)
        finally:
            with self._turn:
                self._interactive_calls -= 1
                self._turn.notify_all()

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
