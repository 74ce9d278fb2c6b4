"""Declarative relation rules: which pairs of labelled chunks a rule relation model joins.

A rule joins a chunk labelled `from_label` to a chunk labelled `to_label` with `relation`
when at most `max_tokens` tokens lie between them, within one sentence when
`same_sentence` is set, and, when `triggers` are given, with one of those words or
phrases between them. Each `to_label` chunk is joined to one `from_label` chunk only (a dose
belongs to one drug), which also bounds the relations a long document can make.
"""

from pydantic import BaseModel, ConfigDict, Field

MAX_TOKEN_DISTANCE = 50
"""The largest `max_tokens` a rule may ask for: pairs are only ever looked for this close."""


class RelationRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_label: str = Field(min_length=1)
    to_label: str = Field(min_length=1)
    relation: str = Field(min_length=1)
    max_tokens: int = Field(8, ge=0, le=MAX_TOKEN_DISTANCE)
    same_sentence: bool = True
    triggers: list[str] = Field(
        default_factory=list, max_length=100, description="words of which one must lie between"
    )

    def describe(self) -> str:
        return f"relation rule {self.from_label} -> {self.to_label} '{self.relation}'"
