"""Chunks marked in their context: what trained assertion and relation models read.

A trained assertion model classifies one chunk: the words around it in its sentence (at
most WINDOW on each side), the chunk replaced by a marker word that carries its label. A
trained relation model classifies an ordered pair of chunks (from, to): the words between
them and PAIR_CONTEXT words around, each chunk replaced by a marker of its role and label.
Masking the chunks' own words makes a model learn from the context, which decides a status
or a relation, rather than from the names it was shown ("no aspirin" teaches about "no
warfarin"). Both are bag-of-n-gram spaCy text classifiers with a NONE class (no status, no
relation). Training and serving build their inputs with the functions here, so a model
reads what it learnt from.

Bounds: context is read CHARS_PER_TOKEN characters per word at most, so a 100k-token
sentence costs a window per chunk. A chunk is paired only with the MAX_PARTNERS nearest
chunks on each side that lie in its sentence at most MAX_TOKEN_DISTANCE tokens away (the
rule model's largest bound), so n chunks give at most 2 * MAX_PARTNERS * n pairs (n log n
to sort them): a 5,000-entity document stays linear.
"""

import re
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from preannotate.annotators.context import CHARS_PER_TOKEN, TOKEN
from preannotate.annotators.relations import Relation
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Span
from preannotate.configs.relations import MAX_TOKEN_DISTANCE

NONE = "NONE"
"""The class of a chunk with no status and of a pair with no relation."""
WINDOW = 6
PAIR_CONTEXT = 3
MAX_PARTNERS = 6
BATCH_SIZE = 256


def _words(text: str, limit: int, last: bool = False) -> list[str]:
    """At most `limit` words of `text` (the last ones when `last`), read from a bounded
    stretch of it."""
    reach = CHARS_PER_TOKEN * limit
    words = TOKEN.findall((text[-reach:] if last else text[:reach]).casefold())
    return words[-limit:] if last else words[:limit]


def _marker(role: str, chunk: Span) -> str:
    """The word that stands for a chunk: its role and label, never its text."""
    tag = re.sub(r"\W+", "_", chunk.label).upper()
    return f"{role}_{tag}"


def assertion_input(doc: Sentences, chunk: Span) -> str:
    """The chunk, marked, between the words around it in its sentence."""
    first, last = doc.bounds(chunk.start, chunk.end)
    text = doc.text
    left = _words(text[first : chunk.start], WINDOW, last=True)
    right = _words(text[chunk.end : last], WINDOW)
    return " ".join([*left, _marker("ENT", chunk), *right])


def relation_input(doc: Sentences, source: Span, target: Span) -> str:
    """The pair `source` -> `target`, both marked, with the words between and around them."""
    text = doc.text
    first, last = doc.bounds(min(source.start, target.start), max(source.end, target.end))
    (a, role_a), (b, role_b) = sorted(((source, "FROM"), (target, "TO")), key=lambda c: c[0].start)
    between = _words(text[a.end : b.start], MAX_TOKEN_DISTANCE)
    return " ".join(
        [
            *_words(text[first : a.start], PAIR_CONTEXT, last=True),
            _marker(role_a, a),
            *between,
            _marker(role_b, b),
            *_words(text[b.end : last], PAIR_CONTEXT),
        ]
    )


def candidate_pairs(doc: Sentences, chunks: Sequence[Span]) -> list[tuple[int, int]]:
    """The ordered pairs `(from, to)` of chunk indexes a relation model looks at (see the
    bound above)."""
    token_starts = [m.start() for m in TOKEN.finditer(doc.text)]
    first = [bisect_left(token_starts, c.start) for c in chunks]
    after = [bisect_left(token_starts, c.end) for c in chunks]
    sentence = [doc.bounds(c.start, c.start + 1)[0] for c in chunks]
    order = sorted(range(len(chunks)), key=lambda i: (chunks[i].start, chunks[i].end))
    pairs = []
    for at, i in enumerate(order):
        for j in order[at + 1 : at + 1 + MAX_PARTNERS]:
            if sentence[j] != sentence[i] or first[j] - after[i] > MAX_TOKEN_DISTANCE:
                break
            pairs += [(i, j), (j, i)]
    return pairs


def _classes(nlp: Any, inputs: list[str]) -> list[str]:
    """The most likely class of each input."""
    return [
        max(doc.cats.items(), key=lambda c: c[1])[0]
        for doc in nlp.pipe(inputs, batch_size=BATCH_SIZE)
    ]


def predict_assertions(
    nlp: Any, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
) -> list[list[str | None]]:
    """A status (or None) for each chunk of each document."""
    inputs = [
        assertion_input(doc, c) for doc, spans in zip(docs, chunks, strict=True) for c in spans
    ]
    found = iter(_classes(nlp, inputs))
    return [[None if (s := next(found)) == NONE else s for _ in spans] for spans in chunks]


def predict_relations(
    nlp: Any, docs: Sequence[Sentences], chunks: Sequence[Sequence[Span]]
) -> list[list[Relation]]:
    """`(from chunk index, to chunk index, relation)` for each document."""
    pairs = [candidate_pairs(doc, spans) for doc, spans in zip(docs, chunks, strict=True)]
    inputs = [
        relation_input(doc, spans[i], spans[j])
        for doc, spans, found in zip(docs, chunks, pairs, strict=True)
        for i, j in found
    ]
    classes = iter(_classes(nlp, inputs))
    out = []
    for found in pairs:
        labelled = [(i, j, next(classes)) for i, j in found]
        out.append([(i, j, label) for i, j, label in labelled if label != NONE])
    return out
