"""A replica's bulk process: a real child process with the news example's spaCy pipeline
(no Ray), answering as the replica's own pipeline does, and never outliving its use."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from preannotate.configs.project import load_project_config
from preannotate.deployments.bulk_process import (
    BATCHES_AT_CHILD,
    BulkProcess,
    BulkProcessFailed,
    PipelineSetup,
)
from preannotate.hub.catalog import Hub
from tests.conftest import EXAMPLES

TASKS = [
    {"id": 1, "data": {"text": "Angela Merkel met Tim Cook in Paris."}},
    {"id": 2, "data": {"text": "Paris " * 200_000}},  # over spaCy's length limit
    {"id": 3, "data": {"text": "Google opened an office in Berlin."}},
]


@pytest.fixture
def setup(hub: Hub) -> PipelineSetup:
    project = load_project_config(EXAMPLES / "news" / "project.json").model_dump()
    return PipelineSetup(project, str(hub.root))


def test_the_bulk_process_answers_as_the_replicas_own_pipeline_then_ends_when_idle(
    setup: PipelineSetup,
) -> None:
    bulk = BulkProcess(setup, idle_s=1.0)
    assert bulk.pid is None  # no second copy of the model before a job sends a batch
    try:
        answers = bulk.annotate(TASKS)
        child = psutil.Process(bulk.pid)
        assert child.pid != os.getpid()
        assert answers == [p.as_encoded_json() for p in setup.build().annotate(TASKS)]
        merkel, too_long, google = answers
        items = json.loads(merkel["result"])  # each result comes as JSON text
        assert {(r["value"]["text"], r["value"]["labels"][0]) for r in items} >= {
            ("Angela Merkel", "PERSON"),
            ("Tim Cook", "PERSON"),
        }
        assert "the limit is 1,000,000" in too_long["error"]  # one task's error stays its own
        assert google["result"] and not google.get("error")

        bulk.annotate(TASKS[:1])
        bulk.stop_if_idle()  # used a moment ago
        assert child.is_running()
        psutil.wait_procs([child], timeout=1.5)
        bulk.stop_if_idle()
        assert bulk.pid is None and not child.is_running()
    finally:
        bulk.close()


def test_batches_sent_together_each_get_their_own_answers(setup: PipelineSetup) -> None:
    """The child holds a batch it runs and the next one; each caller gets its own."""
    batches = [
        [{"id": n, "data": {"text": f"{name} visited Paris on day {n}."}}]
        for n, name in enumerate(["Angela Merkel", "Tim Cook", "Emmanuel Macron"] * 3)
    ]
    bulk = BulkProcess(setup)
    try:
        with ThreadPoolExecutor(4) as threads:
            answers = list(threads.map(bulk.annotate, batches))
    finally:
        bulk.close()
    pipeline = setup.build()
    assert answers == [[p.as_encoded_json() for p in pipeline.annotate(b)] for b in batches]


def test_a_bulk_process_that_dies_fails_the_batches_it_owes_and_the_next_starts_another(
    setup: PipelineSetup,
) -> None:
    bulk = BulkProcess(setup)
    long_batch = [
        {"id": n, "data": {"text": "Angela Merkel met Tim Cook in Paris. " * 50}}
        for n in range(400)
    ]
    try:
        bulk.annotate(TASKS[:1])
        first = bulk.pid
        assert first is not None
        with ThreadPoolExecutor(BATCHES_AT_CHILD) as threads:
            owed = [threads.submit(bulk.annotate, long_batch) for _ in range(BATCHES_AT_CHILD)]
            deadline = time.monotonic() + 30
            while len(bulk._child.owed) < BATCHES_AT_CHILD:  # one running, one in the pipe
                assert time.monotonic() < deadline, "the batches were not sent"
                time.sleep(0.01)
            os.kill(first, signal.SIGKILL)
            for answer in owed:
                with pytest.raises(BulkProcessFailed, match=r"ended \(exit code -9\)"):
                    answer.result(timeout=30)
        assert bulk.annotate(TASKS[:1])[0]["result"]
        assert bulk.pid not in (None, first)
    finally:
        bulk.close()


def test_the_bulk_process_ends_with_a_replica_that_was_killed(setup: PipelineSetup) -> None:
    """A replica killed with SIGKILL (`test_jobs.py` kills one during a job) cannot stop
    its child: the child reads end-of-file on its pipe and ends by itself."""
    replica = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from preannotate.deployments.bulk_process import BulkProcess, PipelineSetup
                bulk = BulkProcess(PipelineSetup({setup.project!r}, {setup.hub_root!r}))
                bulk.annotate({TASKS[:1]!r})
                print(bulk.pid, flush=True)
                time.sleep(600)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child = psutil.Process(int(replica.stdout.readline()))
        assert child.is_running()
    finally:
        replica.kill()
        replica.wait()
    _, left = psutil.wait_procs([child], timeout=10)
    assert left == []
