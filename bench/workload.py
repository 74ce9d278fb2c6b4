"""The benchmark workload: example-project documents, repeated with variations."""

import json
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "configs" / "examples"


def example_texts(project: str = "news", count: int = 10_000) -> list[str]:
    """`count` documents cycling the example tasks; each gets a distinct sentence appended."""
    lines = (EXAMPLES / project / "tasks.jsonl").read_text().splitlines()
    base = [json.loads(line)["data"]["text"] for line in lines if line.strip()]
    return [f"{base[i % len(base)]} Report number {i} was filed." for i in range(count)]


def example_tasks(project: str = "news", count: int = 10_000) -> list[dict]:
    return [{"id": i, "data": {"text": t}} for i, t in enumerate(example_texts(project, count))]
