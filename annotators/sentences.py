"""Sentence boundaries: the one segmentation that every scope which must not cross a
sentence uses (rule context windows; assertion scopes are to use it as well).

It is spaCy's rule-based `sentencizer` on a blank English pipeline, whatever models a
configuration runs: it needs no parser, so every pipeline segments a text the same way and
a model added to a configuration never changes what its rules match.
"""

from bisect import bisect_right
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # spaCy loads on first use: the scheduler imports the pipeline, not spaCy
    from spacy.language import Language

MAX_CHARS = 10_000_000
"""Longer than any document the pipeline accepts; the blank pipeline holds no model, so
spaCy's memory guard (`nlp.max_length`, one million by default) does not apply."""


@cache
def _segmenter() -> "Language":
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    nlp.max_length = MAX_CHARS
    return nlp


def sentence_starts(text: str) -> list[int]:
    """The character offset where each sentence of `text` starts, in order (first is 0)."""
    nlp = _segmenter()
    doc = nlp.get_pipe("sentencizer")(nlp.make_doc(text))  # skips nlp()'s per-call overhead
    starts = [sent.start_char for sent in doc.sents]
    return [0, *starts[1:]] if starts else [0]


class Sentences:
    """The sentences of one text, segmented on first use: texts whose rules need no context
    (or match nothing) never pay for it, and all the rules of a text share one segmentation."""

    def __init__(self, text: str):
        self.text = text
        self._starts: list[int] | None = None

    def bounds(self, start: int, end: int) -> tuple[int, int]:
        """From the start of the sentence holding offset `start` to the end of the sentence
        holding the last character before `end` (a span across a boundary gets both)."""
        if self._starts is None:
            self._starts = sentence_starts(self.text)
        starts = self._starts
        first = bisect_right(starts, start) - 1
        last = bisect_right(starts, max(start, end - 1))
        return starts[first], starts[last] if last < len(starts) else len(self.text)
