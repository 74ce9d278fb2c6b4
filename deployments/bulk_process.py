"""A server's bulk work, in a child process of its replica.

A bulk batch that ran in the replica held the GIL that an interactive call needed, so an
annotator who clicked during a job waited for the running slice of it and for every
switch of the GIL on the way in and out (docs/architecture.md, "Interactive predict").
A replica therefore sends bulk batches to this child, which loads the same pipeline and
runs them in its own interpreter, while the replica's pipeline answers interactive calls
at once. The child starts with the first bulk batch (loading the model takes seconds,
once per job), costs a second copy of the model while a job runs, and ends after
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
from dataclasses import dataclass
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


class BulkProcess:
    """The replica's side: starts the child when a batch comes and none runs, sends it one
    batch at a time, and stops it when it has been idle for `idle_s`."""

    def __init__(self, setup: PipelineSetup, idle_s: float = IDLE_S):
        self.setup = setup
        self.idle_s = idle_s
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._last_used = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def annotate(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The batch's predictions (JSON dicts, one per task, in order). A child that
        ended is started again for this batch; one that ends during it fails the batch."""
        with self._lock:
            try:
                if self._child is None:
                    self._child = self._start()
                ok, value = self._exchange(self._child, tasks)
            finally:
                self._last_used = time.monotonic()
        if not ok:
            raise BulkProcessFailed(value)
        return value

    def stop_if_idle(self) -> None:
        """Stop the child once no batch came for `idle_s`; a batch under way keeps it."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._child and time.monotonic() - self._last_used > self.idle_s:
                self._stop()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _start(self) -> "subprocess.Popen[bytes]":
        child = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        ok, value = self._exchange(child, self.setup)
        if not ok:
            child.wait()  # it exits after saying why; reap it
            raise BulkProcessFailed(f"the bulk process could not load the pipeline: {value}")
        return child

    def _exchange(self, child: "subprocess.Popen[bytes]", message: object) -> tuple[bool, Any]:
        """Send one message and read the answer; a child that ended is reaped and forgotten."""
        assert child.stdin is not None and child.stdout is not None
        try:
            pickle.dump(message, child.stdin, pickle.HIGHEST_PROTOCOL)
            child.stdin.flush()
            return pickle.load(child.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            child.kill()
            code = child.wait()
            if child is self._child:
                self._child = None
            raise BulkProcessFailed(f"the bulk process ended (exit code {code})") from exc

    def _stop(self) -> None:
        """Close the child's input: it ends after the batch it may be running."""
        if self._child is None:
            return
        child, self._child = self._child, None
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


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
            answer = (True, [p.as_json() for p in pipeline.annotate(tasks)])
        except Exception as exc:
            answer = (False, f"{type(exc).__name__}: {exc}")
        try:
            _answer(out, *answer)
        except BrokenPipeError:
            return


if __name__ == "__main__":
    main()
