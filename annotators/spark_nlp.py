"""The Spark NLP runtime: a saved `PipelineModel` run by a `LightPipeline`, offline.

The hub model's `path` names a folder saved by `PipelineModel.save`; it is loaded with
`PipelineModel.load` (never `pretrained()`, which downloads). Spark NLP's jar comes from
the operator: `PREANNOTATE_SPARK_NLP_JAR` names a local fat jar, passed as `spark.jars` to a
local SparkSession this module builds (`sparknlp.start()` would add Maven coordinates, which
cannot resolve offline). Without it, a configuration with a `spark-nlp` model is refused
before anything deploys.

One JVM per process (a replica): the session is built once, by the first Spark NLP model
loaded, with a heap of HEAP_SHARE of that model's `resources.memory_mb`; the manifest's
memory request therefore covers the JVM heap and the Python side together.

`fullAnnotate` output becomes what the pipeline reads: chunk annotations (`begin`/`end`
inclusive, the label in metadata `entity`) whole-chunk spans; assertion annotations the
status of the chunk with the same offsets; relation annotations (category annotations
naming `entity1_begin` ... `entity2_end`) relations between the chunks at those offsets;
other category annotations the document's class scores.
"""

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preannotate.annotators.jvm import JAVA_17_OPTIONS
from preannotate.annotators.relations import Relation
from preannotate.annotators.runtimes import ModelRuntime
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Source, Span
from preannotate.hub.catalog import HubError, HubModel

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from sparknlp.annotation import Annotation

JAR_ENV = "PREANNOTATE_SPARK_NLP_JAR"
HEAP_SHARE = 0.75
"""The JVM's heap as a share of the model's memory request; the rest is the Python side's."""
MIN_HEAP_MB = 512
RELATION_KEYS = ("entity1_begin", "entity1_end", "entity2_begin", "entity2_end")
NOT_SCORES = {"sentence", "chunk", "confidence", "document"}
"""Category metadata keys that are not a class's score."""

_session: "SparkSession | None" = None
_session_lock = threading.Lock()


def jar_problem() -> str | None:
    """Why Spark NLP models cannot run in this process, or None when its jar is there."""
    jar = os.environ.get(JAR_ENV)
    if not jar:
        return (
            f"Spark NLP models need the Spark NLP jar: set {JAR_ENV} to a local Spark NLP "
            "fat jar on every node (it is not downloaded)"
        )
    if not Path(jar).is_file():
        return f"{JAR_ENV} names {jar}, which is not a file; it must name the Spark NLP fat jar"
    return None


def heap_mb(memory_mb: int) -> int:
    return max(MIN_HEAP_MB, int(memory_mb * HEAP_SHARE))


def spark_nlp_session(heap: int) -> "SparkSession":
    """This process's one local SparkSession with the operator's Spark NLP jar."""
    global _session
    with _session_lock:
        if _session is None:
            from pyspark.sql import SparkSession

            _session = (
                SparkSession.builder.master("local[1]")
                .appName("preannotate-spark-nlp")
                .config("spark.jars", os.environ[JAR_ENV])
                .config("spark.driver.memory", f"{heap}m")
                .config("spark.driver.extraJavaOptions", JAVA_17_OPTIONS)
                .config("spark.serializer", "org.apache.spark.serializer.KryoSerializer")
                .config("spark.kryoserializer.buffer.max", "2000M")
                .config("spark.ui.enabled", "false")
                .getOrCreate()
            )
        return _session


def _confidence(annotation: "Annotation") -> float | None:
    try:
        return float(annotation.metadata["confidence"])
    except (KeyError, TypeError, ValueError):
        return None


def _flat(outputs: dict[str, list["Annotation"]]) -> list["Annotation"]:
    return [a for column in outputs.values() for a in column]


def chunk_spans(annotations: Iterable["Annotation"], source: Source) -> list[Span]:
    """Labeled chunks as whole spans (end exclusive), each once, in text order."""
    spans = {}
    for a in annotations:
        if a.annotatorType == "chunk" and a.metadata.get("entity"):
            span = Span(a.begin, a.end + 1, a.metadata["entity"], source, _confidence(a))
            spans.setdefault((span.start, span.end, span.label), span)
    return sorted(spans.values(), key=lambda s: (s.start, s.end))


def chunk_statuses(annotations: Iterable["Annotation"], chunks: Sequence[Span]) -> list[str | None]:
    """The status of each chunk: the assertion annotation over the same characters."""
    found = {(a.begin, a.end + 1): a.result for a in annotations if a.annotatorType == "assertion"}
    return [found.get((c.start, c.end)) for c in chunks]


def chunk_relations(annotations: Iterable["Annotation"], chunks: Sequence[Span]) -> list[Relation]:
    """Relations between the chunks whose offsets the relation annotations name; a relation
    one of whose ends is not among the chunks is dropped, as is the label "O" (none)."""
    index = {(c.start, c.end): i for i, c in enumerate(chunks)}
    relations = []
    for a in annotations:
        if a.annotatorType != "category" or not all(k in a.metadata for k in RELATION_KEYS):
            continue
        meta = a.metadata
        source = index.get((int(meta["entity1_begin"]), int(meta["entity1_end"]) + 1))
        target = index.get((int(meta["entity2_begin"]), int(meta["entity2_end"]) + 1))
        if source is not None and target is not None and a.result not in ("O", ""):
            relations.append((source, target, a.result))
    return relations


def document_scores(annotations: Iterable["Annotation"]) -> dict[str, float]:
    """Class scores from the document's category annotations (not relations): the scores
    their metadata holds per class, else the chosen class at its confidence; a class
    scored on several sentences keeps its highest score."""
    scores: dict[str, float] = {}
    for a in annotations:
        if a.annotatorType != "category" or any(k in a.metadata for k in RELATION_KEYS):
            continue
        found = {}
        for key, value in a.metadata.items():
            if key in NOT_SCORES:
                continue
            try:
                found[key] = float(value)
            except (TypeError, ValueError):
                continue
        if not found:
            found = {a.result: _confidence(a) or 1.0}
        for label, score in found.items():
            scores[label] = max(score, scores.get(label, 0.0))
    return scores


class SparkNlpRuntime(ModelRuntime):
    """A saved Spark NLP `PipelineModel` in a `LightPipeline`; the last batch's annotations
    are kept, so a model asked for chunks and then their statuses annotates once."""

    KINDS = frozenset({"ner", "classification", "assertion", "relation"})

    @classmethod
    def unavailable(cls) -> str | None:
        return jar_problem()

    def __init__(self, model: HubModel):
        super().__init__(model)
        if problem := jar_problem():
            raise HubError(problem)
        folder = model.weights_path()
        if folder is None or not folder.is_dir():
            raise HubError(
                f"model '{model.name}': 'path' must name the folder of a saved Spark NLP "
                "PipelineModel"
            )
        from pyspark.ml import PipelineModel
        from sparknlp.base import LightPipeline

        spark_nlp_session(heap_mb(model.manifest.resources.memory_mb))
        self.light = LightPipeline(PipelineModel.load(str(folder)))
        self._last: tuple[tuple[str, ...], list[list[Any]]] = ((), [])

    def _annotations(self, texts: Sequence[str]) -> list[list["Annotation"]]:
        key = tuple(texts)
        if self._last[0] != key:
            outputs = self.light.fullAnnotate(list(texts)) if texts else []
            self._last = (key, [_flat(o) for o in outputs])
        return self._last[1]

    def entities(self, texts: Sequence[str]) -> list[list[Span]]:
        return [chunk_spans(a, self.source) for a in self._annotations(texts)]

    def classify(self, texts: Sequence[str]) -> list[dict[str, float]]:
        return [document_scores(a) for a in self._annotations(texts)]

    def assertions(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[str | None]]:
        found = self._annotations([d.text for d in docs])
        return [chunk_statuses(a, c) for a, c in zip(found, chunks, strict=True)]

    def relations(
        self, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
    ) -> list[list[Relation]]:
        found = self._annotations([d.text for d in docs])
        return [chunk_relations(a, c) for a, c in zip(found, chunks, strict=True)]
