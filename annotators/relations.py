"""Relations between the entity chunks of one text, by declarative rules
(`configs/relations.py`).

Each `to_label` chunk joins one `from_label` chunk only: the nearest one before it in its
clause (attributes follow their drug), else the nearest after it.

Bound: a rule only pairs chunks at most `max_tokens` tokens apart (50 at most), looked up
outward from each `to_label` chunk in chunks sorted by position. A text with n chunks costs
O(n log n) plus O(n * k) checks, k being the chunks within the distance
(k <= 2 * (max_tokens + 1), since the chunks of one control never overlap), and yields at
most n relations per rule: a 5,000-entity document stays linear, never quadratic.
"""

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from preannotate.annotators.context import TOKEN, phrase_tokens
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Span
from preannotate.configs.relations import RelationRule

Relation = tuple[int, int, str]
"""(index of the from chunk, index of the to chunk, relation label)."""


class RuleRelations:
    def __init__(self, rules: Sequence[RelationRule]):
        self.rules = list(rules)
        self.triggers = [[phrase_tokens(t) for t in rule.triggers] for rule in self.rules]

    def find(self, doc: Sentences, chunks: Sequence[Span]) -> list[Relation]:
        """Every relation the rules give between `chunks` of the text `doc` holds."""
        text = doc.text
        token_starts = [m.start() for m in TOKEN.finditer(text)]
        first = [bisect_left(token_starts, c.start) for c in chunks]
        after = [bisect_left(token_starts, c.end) for c in chunks]
        found: list[Relation] = []
        for rule, triggers in zip(self.rules, self.triggers, strict=True):
            froms = sorted(
                (i for i, c in enumerate(chunks) if c.label == rule.from_label),
                key=lambda i: first[i],
            )
            starts = [first[i] for i in froms]
            for to in (i for i, c in enumerate(chunks) if c.label == rule.to_label):
                near = self._within(froms, starts, first, after, to, rule.max_tokens)
                for _, source in sorted(self._ranked(text, chunks, to, near)):
                    if source != to and self._holds(rule, triggers, doc, chunks, source, to):
                        found.append((source, to, rule.relation))
                        break
        return found

    @staticmethod
    def _within(
        froms: list[int],
        starts: list[int],
        first: list[int],
        after: list[int],
        to: int,
        limit: int,
    ) -> list[tuple[int, int]]:
        """`(gap in tokens, chunk)` for the `from` chunks within `limit` tokens of chunk
        `to`: outward from it on both sides, so only nearby chunks are ever looked at."""
        right = bisect_left(starts, first[to])
        near = []
        for i in range(right - 1, -1, -1):
            gap = first[to] - after[froms[i]]
            if gap > limit:
                break
            near.append((gap, froms[i]))
        for i in range(right, len(froms)):
            gap = first[froms[i]] - after[to]
            if gap > limit:
                break
            near.append((gap, froms[i]))
        return near

    @staticmethod
    def _ranked(
        text: str, chunks: Sequence[Span], to: int, near: list[tuple[int, int]]
    ) -> Iterator[tuple[tuple[bool, bool, int], int]]:
        """Chunks across no clause break (";") first, then those before `to` (attributes
        follow their drug: "Lipitor 20 mg at bedtime; lisinopril"), then the nearest."""
        target = chunks[to]
        for gap, source in near:
            before = chunks[source].start < target.start
            between = (
                text[chunks[source].end : target.start]
                if before
                else text[target.end : chunks[source].start]
            )
            yield (";" in between, not before, gap), source

    @staticmethod
    def _holds(
        rule: RelationRule,
        triggers: list[tuple[str, ...]],
        doc: Sentences,
        chunks: Sequence[Span],
        source: int,
        to: int,
    ) -> bool:
        a, b = sorted((chunks[source], chunks[to]), key=lambda c: c.start)
        if rule.same_sentence and doc.bounds(a.start, a.end)[0] != doc.bounds(b.start, b.end)[0]:
            return False
        if not triggers:
            return True
        between = f" {' '.join(TOKEN.findall(doc.text[a.end : b.start].casefold()))} "
        return any(f" {' '.join(words)} " in between for words in triggers)
