"""Assertion status by the ConText algorithm (Harkema et al., 2009), which extends NegEx
(Chapman et al., 2001) from negation to possibility, hypotheticals, conditions, history and
experiencer.

A lexicon (data in the model's hub folder) lists trigger terms per status, each with a
direction: a forward trigger qualifies chunks after it, a backward trigger chunks before
it. A trigger's scope ends at a termination term, at the sentence end
(`annotators/sentences.py`) and after `window` words. Pseudo-triggers ("no increase")
contain a trigger but qualify nothing. Phrases match whole words, longest first, through a
word trie, so the work per chunk is bounded by the window, never by the sentence length.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from preannotate.annotators.sentences import Sentences
from preannotate.configs.textfiles import read_json_as

TOKEN = re.compile(r"\w+(?:[-'/]\w+)*|[^\w\s]")
MAX_PHRASE_WORDS = 8
MAX_PHRASE_CHARS = 100
MAX_WINDOW = 50
CHARS_PER_TOKEN = 40
"""Characters read per token of context: a window never scans a whole sentence."""
Direction = Literal["forward", "backward", "both"]


def phrase_tokens(phrase: str) -> tuple[str, ...]:
    return tuple(TOKEN.findall(phrase.casefold()))


class Triggers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    forward: list[str] = []
    backward: list[str] = []
    both: list[str] = []


class Lexicon(BaseModel):
    """The lexicon file: triggers per status and direction, pseudo-triggers, termination
    terms, the window in words, the status of a chunk no trigger reaches, and which status
    wins when triggers of several reach one chunk."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(10, ge=1, le=MAX_WINDOW)
    default: str = Field(min_length=1)
    priority: list[str] = Field(min_length=1)
    triggers: dict[str, Triggers]
    pseudo: list[str] = []
    termination: list[str] = []

    @field_validator("pseudo", "termination")
    @classmethod
    def _phrases(cls, phrases: list[str]) -> list[str]:
        for phrase in phrases:
            _check_phrase(phrase)
        return phrases

    @field_validator("triggers")
    @classmethod
    def _trigger_phrases(cls, triggers: dict[str, Triggers]) -> dict[str, Triggers]:
        for lists in triggers.values():
            for phrase in [*lists.forward, *lists.backward, *lists.both]:
                _check_phrase(phrase)
        return triggers


def _check_phrase(phrase: str) -> None:
    words = phrase_tokens(phrase)
    if not words or len(phrase) > MAX_PHRASE_CHARS or len(words) > MAX_PHRASE_WORDS:
        raise ValueError(
            f"the phrase {phrase[:60]!r} must hold 1 to {MAX_PHRASE_WORDS} words "
            f"in at most {MAX_PHRASE_CHARS} characters"
        )


@dataclass(frozen=True, slots=True)
class Term:
    """What a lexicon phrase is: a trigger of a status with a direction, a pseudo-trigger
    or a termination term."""

    role: Literal["trigger", "pseudo", "termination"]
    status: str = ""
    direction: Direction = "both"


@dataclass(frozen=True, slots=True)
class Match:
    start: int  # token index of the first word
    end: int  # token index after the last word
    term: Term


class ContextModel:
    """A compiled lexicon: `status` of a chunk in its text."""

    def __init__(self, lexicon: Lexicon, source: str):
        self.lexicon = lexicon
        self.window = lexicon.window
        self.trie: dict = {}
        seen: dict[tuple[str, ...], str] = {}
        entries: list[tuple[str, Term, str]] = []
        for status, lists in lexicon.triggers.items():
            for direction in ("forward", "backward", "both"):
                for phrase in getattr(lists, direction):
                    entries.append((phrase, Term("trigger", status, direction), status))
        entries += [(p, Term("pseudo"), "pseudo") for p in lexicon.pseudo]
        entries += [(p, Term("termination"), "termination") for p in lexicon.termination]
        for phrase, term, where in entries:
            words = phrase_tokens(phrase)
            if words in seen:
                raise ValueError(
                    f"{source}: the phrase '{phrase}' is listed twice ({seen[words]} and {where})"
                )
            seen[words] = where
            node = self.trie
            for word in words:
                node = node.setdefault(word, {})
            node[None] = term
        order = {status: i for i, status in enumerate(lexicon.priority)}
        self.rank = {s: order.get(s, len(order)) for s in lexicon.triggers}

    @classmethod
    def load(cls, file: Path, statuses: list[str]) -> "ContextModel":
        """Read and check a lexicon file: its statuses must be ones the model declares."""
        lexicon = read_json_as(file, TypeAdapter(Lexicon))
        unknown = sorted(({lexicon.default, *lexicon.priority, *lexicon.triggers}) - set(statuses))
        if unknown:
            raise ValueError(
                f"{file} names statuses its manifest does not list: {', '.join(unknown)} "
                f"(manifest labels: {', '.join(statuses)})"
            )
        return cls(lexicon, str(file))

    def _matches(self, words: list[str]) -> list[Match]:
        """Lexicon phrases in `words`, left to right, the longest at each position."""
        found = []
        i = 0
        while i < len(words):
            node, best = self.trie, None
            for j in range(i, min(len(words), i + MAX_PHRASE_WORDS)):
                node = node.get(words[j])
                if node is None:
                    break
                if None in node:
                    best = Match(i, j + 1, node[None])
            if best is None:
                i += 1
            else:
                found.append(best)
                i = best.end
        return found

    def _reach(self, matches: list[Match], words: list[str], forward: bool) -> set[str]:
        """Statuses whose triggers reach the chunk: from the left context (`forward`) or
        the right one, nearest first, stopping at a termination term or the window."""
        reached: set[str] = set()
        ordered = reversed(matches) if forward else iter(matches)
        wanted = ("forward", "both") if forward else ("backward", "both")
        for match in ordered:
            gap = words[match.end :] if forward else words[: match.start]
            if sum(1 for w in gap if w[0].isalnum() or w[0] == "_") > self.window:
                break
            if match.term.role == "termination":
                break
            if match.term.role == "trigger" and match.term.direction in wanted:
                reached.add(match.term.status)
        return reached

    def status(self, text: str, start: int, end: int, sentences: Sentences) -> str:
        """The status of the chunk `text[start:end]`: the highest-priority status among the
        triggers that reach it, else the lexicon's default."""
        first, last = sentences.bounds(start, end)
        reach = CHARS_PER_TOKEN * (self.window + MAX_PHRASE_WORDS)
        keep = 2 * (self.window + MAX_PHRASE_WORDS)
        left = TOKEN.findall(text[max(first, start - reach) : start].casefold())[-keep:]
        right = TOKEN.findall(text[end : min(last, end + reach)].casefold())[:keep]
        reached = self._reach(self._matches(left), left, forward=True)
        reached |= self._reach(self._matches(right), right, forward=False)
        if not reached:
            return self.lexicon.default
        return min(reached, key=lambda s: self.rank[s])
