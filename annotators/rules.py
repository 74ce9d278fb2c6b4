"""Run rules over text: RE2 regexes and dictionaries, with whole-word and context checks.

Context windows (`prefix`, `suffix`, `exclude_context`) stop at sentence ends
(`annotators/sentences.py`): "allergic" in one sentence never drops a drug in the next.
"""

import re
from collections.abc import Iterator

from preannotate.annotators.dictionaries import Dictionary
from preannotate.annotators.sentences import Sentences
from preannotate.annotators.spans import Source, Span
from preannotate.configs.rules import Rule, compile_regex

WORD = re.compile(r"\w+(?:[-']\w+)*")
CHARS_PER_WORD = 40
"""Characters read per context word: a window never scans a whole document."""


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _phrase_in(words: list[str], phrases: list[str]) -> bool:
    window = f" {' '.join(words)} "
    return any(f" {' '.join(WORD.findall(p.casefold()))} " in window for p in phrases)


class RuleMatcher:
    """One compiled rule; `find` returns its spans in a text."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.source = Source("rule", rule.name, str(rule.version))
        self.pattern = compile_regex(rule.regex, rule.case_sensitive) if rule.regex else None
        self.dictionary = (
            Dictionary(rule.dictionary, rule.case_sensitive) if rule.dictionary else None
        )

    def _whole_word(self, text: str, start: int, end: int) -> bool:
        if not self.rule.whole_word:
            return True
        before = start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start])
        after = end < len(text) and _is_word_char(text[end]) and _is_word_char(text[end - 1])
        return not (before or after)

    def _matches(self, text: str) -> Iterator[tuple[int, int, str | None]]:
        """`(start, end, normalized value)` of every match that passes the whole-word check."""
        if self.dictionary is not None:
            yield from self.dictionary.find(text, lambda s, e: self._whole_word(text, s, e))
            return
        assert self.pattern is not None
        for match in self.pattern.finditer(text):
            start, end = match.start(), match.end()
            if start < end and self._whole_word(text, start, end):
                yield start, end, None

    def _context_ok(self, text: str, start: int, end: int, sentences: Sentences) -> bool:
        rule = self.rule
        if not (rule.prefix or rule.suffix or rule.exclude_context):
            return True
        window = rule.context_window
        first, last = sentences.bounds(start, end)
        reach = CHARS_PER_WORD * window
        before = WORD.findall(text[max(first, start - reach) : start].casefold())[-window:]
        after = WORD.findall(text[end : min(last, end + reach)].casefold())[:window]
        if rule.exclude_context and _phrase_in(before + ["|"] + after, rule.exclude_context):
            return False
        if not (rule.prefix or rule.suffix):
            return True
        return (bool(rule.prefix) and _phrase_in(before, rule.prefix)) or (
            bool(rule.suffix) and _phrase_in(after, rule.suffix)
        )

    def find(self, text: str, sentences: Sentences | None = None) -> list[Span]:
        """The rule's spans in `text`; pass the text's `Sentences` to share one segmentation
        among the rules run over it."""
        sentences = sentences or Sentences(text)
        rule = self.rule
        return [
            Span(start, end, rule.label, self.source, rule.confidence, normalized)
            for start, end, normalized in self._matches(text)
            if self._context_ok(text, start, end, sentences)
        ]
