"""Entity candidates from models and rules, and the policy that picks among overlapping ones.

Overlap policy (one per `<Labels>` control): the longest span wins; between spans of equal
length, a model's beats a rule's (or the reverse, when the configuration says
`"prefer": "rule"`); then the earlier one. A span is kept only when it overlaps
no span already kept, so annotators never see stacked or nested pre-annotations.
"""

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Source:
    """Which model, rule or prompt produced a region, and which version of it."""

    kind: Literal["model", "rule", "prompt"]
    name: str
    version: str

    def as_json(self) -> dict[str, str]:
        return {"type": self.kind, "name": self.name, "version": self.version}


@dataclass(frozen=True, slots=True)
class Span:
    """One whole entity: character offsets into the document text, never a token piece."""

    start: int
    end: int
    label: str
    source: Source
    confidence: float | None = None
    normalized: str | None = None

    def overlaps(self, other: "Span") -> bool:
        return self.start < other.end and other.start < self.end


def resolve_overlaps(candidates: list[Span], prefer: str = "model") -> list[Span]:
    """Apply the overlap policy; the result is sorted by position."""

    def priority(span: Span) -> tuple[int, int, int]:
        return (-(span.end - span.start), 0 if span.source.kind == prefer else 1, span.start)

    kept: list[Span] = []
    for span in sorted(candidates, key=priority):
        if not any(span.overlaps(k) for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: (s.start, s.end))
