"""The figures the README quotes are the ones the code uses: each phrase below is built from
the constant itself, so changing a constant without the README (or the reverse) fails here."""

import inspect

import pytest

from preannotate.annotators.training import MIN_COMPLETIONS
from preannotate.client.cli import up
from preannotate.configs.rules import MAX_DICTIONARY_TERMS, MAX_PATTERN_CHARS
from preannotate.configs.training import TrainingSpec
from preannotate.deployments.access_cache import TOKEN_CACHE_S
from preannotate.deployments.bulk_process import IDLE_S
from preannotate.deployments.model_server import MAX_ONGOING_REQUESTS
from preannotate.deployments.server_ingress import MAX_INTERACTIVE_TASKS
from preannotate.hub.validation import MAX_MODELS
from preannotate.scheduler.bulk import (
    BATCH_CHARS,
    BATCH_SIZE,
    IN_FLIGHT,
    MAX_BULK_PER_REPLICA,
    MIN_BATCH_SIZE,
)
from tests.conftest import ROOT

README = " ".join((ROOT / "README.md").read_text().split())  # line breaks do not matter
DEFAULT_PORT = inspect.signature(up).parameters["port"].default
HOLDOUT = TrainingSpec.model_fields["holdout"].default


@pytest.mark.parametrize(
    "phrase",
    [
        f"ends after {IDLE_S:g} seconds without one (`IDLE_S`)",
        f"sends batches of up to {BATCH_SIZE} tasks and {BATCH_CHARS:,} characters of text",
        f"with {IN_FLIGHT} batches in flight",
        f"A job of fewer than {IN_FLIGHT * BATCH_SIZE:,} tasks (or a resumed one with fewer "
        f"left) is cut into about {IN_FLIGHT} batches of at least {MIN_BATCH_SIZE} tasks",
        f"never more than {MAX_BULK_PER_REPLICA} per replica, half of the "
        f"{MAX_ONGOING_REQUESTS} calls a replica takes at once",
        f"pre-annotate up to {MAX_INTERACTIVE_TASKS} tasks now",
        f"moves no counter, stops working within {TOKEN_CACHE_S:g} s",
        f"[--port {DEFAULT_PORT}]",
        f"more than {MAX_MODELS} distinct models",
        f"patterns longer than {MAX_PATTERN_CHARS:,} characters",
        f"more than {MAX_DICTIONARY_TERMS:,} terms",
        f"{HOLDOUT:.0%} of the completions (`holdout`) are held out",
        f"Fewer than {MIN_COMPLETIONS} usable completions",
    ],
)
def test_readme_states_the_figure_the_code_uses(phrase: str) -> None:
    assert phrase in README
