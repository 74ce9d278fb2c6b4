"""A server's bulk work, in a child process of its replica.

A bulk batch that ran in the replica held the GIL that an interactive call needed, so an
annotator who clicked during a job waited for the running slice of it and for every
switch of the GIL on the way in and out (docs/architecture.md, "Interactive predict").
A replica therefore sends bulk batches to this child, which loads the same pipeline and
runs them in its own interpreter, while the replica's pipeline answers interactive calls
at once. The child starts with the first bulk batch (loading the model takes seconds,
once per spell of bulk work), costs a second copy of the model while a job runs, and ends after
`IDLE_S` without bulk work, or with its replica: it reads end-of-file on its pipe.

Run as `python -m preannotate.deployments.bulk_process`: the setup, then one batch after
another, arrive pickled on standard input; the answers leave pickled on the original
standard output, which the child turns to standard error for anything a library prints.
"""

import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from preannotate.annotators.pipeline import Pipeline
from preannotate.annotators.visual_pipeline import VisualPipeline, pipeline_for
from preannotate.configs.project import ProjectConfig
from preannotate.hub.catalog import Hub
from preannotate.hub.validation import validate_config

if TYPE_CHECKING:
    from preannotate.annotators.llm import ProviderAccess

IDLE_S = 300.0
"""How long the child stays loaded without bulk work: a job started within it (the next
run of a project, say) does not wait for the model to load again; after it, a server
that only answers interactive calls holds one copy of the model."""


@dataclass(frozen=True)
class PipelineSetup:
    """What a server's pipeline is built from; the replica and its bulk process build the
    same one. `providers` are the external LLM providers' settings, keys sealed."""

    project: dict[str, Any]
    hub_root: str
    providers: dict[str, dict[str, Any]] | None = None

    def build(self) -> Pipeline | VisualPipeline:
        hub = Hub(Path(self.hub_root))
        config = validate_config(ProjectConfig.model_validate(self.project), hub)
        pipeline = pipeline_for(config, hub)
        if self.providers:
            pipeline.connect_providers(open_providers(self.providers))
        return pipeline


def open_providers(sealed: dict[str, dict[str, Any]]) -> dict[str, "ProviderAccess"]:
    """The providers the server's external prompts call, their keys opened here, on the
    server's node, with the operator's secret key from its environment: only the sealed
    keys cross Ray. `ProviderAccess` leaves the key out of its repr, so no log line shows
    it. Imported here: a bulk process without providers starts 0.3 s sooner without the
    LLM client and the store."""
    from preannotate.annotators.llm import CONCURRENCY, REQUEST_TIMEOUT_S, ProviderAccess
    from preannotate.store.providers import open_key

    return {
        name: ProviderAccess(
            name=name,
            kind=p["kind"],
            base_url=p["base_url"],
            api_key=open_key(p["sealed_key"], name),
            api_version=p["api_version"],
            timeout_s=p["timeout_s"] or REQUEST_TIMEOUT_S,
            concurrency=p["concurrency"] or CONCURRENCY,
        )
        for name, p in sealed.items()
    }


class BulkProcessFailed(RuntimeError):
    """The child could not answer a batch; the job sends it again (`scheduler/bulk.py`)."""


BATCHES_AT_CHILD = 2
"""Batches handed to the child at once: the one it runs and the next, waiting in its pipe,
so it starts that one as soon as it has answered. Sent one at a time, it sat idle for
every hand-over: about 5% of its time at 1,300 tasks/s."""


@dataclass
class _Child:
    """A running child and the answers it owes, in the order their batches were sent."""

    popen: "subprocess.Popen[bytes]"
    owed: deque[Future[tuple[bool, Any]]] = field(default_factory=deque)


class BulkProcess:
    """The replica's side: starts the child when a batch comes and none runs, keeps up to
    `BATCHES_AT_CHILD` batches with it (a thread per child reads its answers in order),
    and stops it when it has been idle for `idle_s`."""

    def __init__(self, setup: PipelineSetup, idle_s: float = IDLE_S):
        self.setup = setup
        self.idle_s = idle_s
        self._child: _Child | None = None
        self._lock = threading.Lock()
        """Held to start or stop the child and to send it a batch (which then owes the
        answer in that order); never held while reading an answer."""
        self._last_used = time.monotonic()

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.popen.pid if child else None

    def annotate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The batch's predictions (one per task, in order, each result as JSON text:
        `TaskPrediction.as_encoded_json`); blocks until they come. A child that ended is
        started again for this batch; one that ends while it owes the batch fails it."""
        batch = pickle.dumps(tasks, pickle.HIGHEST_PROTOCOL)
        answer: Future[tuple[bool, Any]] = Future()
        with self._lock:
            self._last_used = time.monotonic()
            if self._child is None:
                self._child = self._start()
            child = self._child
            child.owed.append(answer)
            try:
                _write(child.popen, batch)
            except OSError:
                child.popen.kill()  # its reader fails every batch it owes, this one too
        ok, value = answer.result()
        if not ok:
            raise BulkProcessFailed(value)
        return value

    def stop_if_idle(self) -> None:
        """Stop the child once no batch came for `idle_s`; a batch under way keeps it."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            child = self._child
            if child and not child.owed and time.monotonic() - self._last_used > self.idle_s:
                self._stop()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> _Child:
        popen = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            _write(popen, pickle.dumps(self.setup, pickle.HIGHEST_PROTOCOL))
            ok, value = _receive(popen)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            popen.kill()
            code = popen.wait()
            raise BulkProcessFailed(f"the bulk process ended (exit code {code})") from exc
        if not ok:
            popen.wait()  # it exits after saying why; reap it
            raise BulkProcessFailed(f"the bulk process could not load the pipeline: {value}")
        child = _Child(popen)
        threading.Thread(target=self._read, args=(child,), name="bulk-answers", daemon=True).start()
        return child

    def _read(self, child: _Child) -> None:
        """Hand each answer to the batch that owes it, until the child ends; then reap it
        and fail what it still owed."""
        try:
            while True:
                answer = _receive(child.popen)
                self._last_used = time.monotonic()
                child.owed.popleft().set_result(answer)
        except (OSError, EOFError, pickle.UnpicklingError):
            pass
        child.popen.kill()  # one that closed its output is ending anyway
        code = child.popen.wait()
        with self._lock:
            if self._child is child:
                self._child = None
            failed = list(child.owed)
            child.owed.clear()
        for answer in failed:
            answer.set_result((False, f"the bulk process ended (exit code {code})"))

    def _stop(self) -> None:
        """Close the child's input: it ends after the batch it may be running."""
        if self._child is None:
            return
        child, self._child = self._child, None
        assert child.popen.stdin is not None
        child.popen.stdin.close()
        try:
            child.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.popen.kill()
            child.popen.wait()


def _write(popen: "subprocess.Popen[bytes]", message: bytes) -> None:
    """Send one pickled message; pickled beforehand, so one that does not pickle fails
    before any of it reaches the pipe."""
    assert popen.stdin is not None
    popen.stdin.write(message)
    popen.stdin.flush()


def _receive(popen: "subprocess.Popen[bytes]") -> tuple[bool, Any]:
    assert popen.stdout is not None
    return pickle.load(popen.stdout)


def _answer(out: IO[bytes], ok: bool, value: object) -> None:
    try:
        data = pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an answer that does not pickle fails its batch only
        data = pickle.dumps((False, f"the answer could not be sent: {exc}"))
    out.write(data)
    out.flush()


def main() -> None:
    """The child: load the pipeline, then answer batches until the replica closes the pipe
    (or ends: the pipe closes with it)."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    try:
        pipeline = pickle.load(requests).build()
    except EOFError:
        return
    except Exception as exc:
        _answer(out, False, f"{type(exc).__name__}: {exc}")
        return
    _answer(out, True, None)
    while True:
        try:
            tasks = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = (True, [p.as_encoded_json() for p in pipeline.annotate(tasks)])
        except Exception as exc:
            answer = (False, f"{type(exc).__name__}: {exc}")
        try:
            _answer(out, *answer)
        except BrokenPipeError:
            return


if __name__ == "__main__":
    main()
