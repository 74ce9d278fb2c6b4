"""Run rules over text: RE2 regexes and dictionaries, with whole-word and context checks."""

import re

from preannotate.annotators.spans import Source, Span
from preannotate.configs.rules import Rule, compile_regex

WORD = re.compile(r"\w+(?:[-']\w+)*")


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _dictionary_pattern(rule: Rule) -> tuple[str, dict[str, str]]:
    """One alternation over every term, longest first, plus term -> normalized value."""
    assert rule.dictionary is not None
    lookup: dict[str, str] = {}
    for value, synonyms in rule.dictionary.items():
        for term in (value, *synonyms):
            key = term if rule.case_sensitive else term.casefold()
            lookup.setdefault(key, value)
    terms = sorted(lookup, key=len, reverse=True)
    return "|".join(re.escape(t) for t in terms), lookup


def _phrase_in(words: list[str], phrases: list[str]) -> bool:
    window = f" {' '.join(words)} "
    return any(f" {' '.join(WORD.findall(p.casefold()))} " in window for p in phrases)


class RuleMatcher:
    """One compiled rule; `find` returns its spans in a text."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.source = Source("rule", rule.name, str(rule.version))
        if rule.kind == "regex":
            assert rule.regex is not None
            self.pattern = compile_regex(rule.regex, rule.case_sensitive)
            self.lookup: dict[str, str] | None = None
        else:
            alternation, self.lookup = _dictionary_pattern(rule)
            self.pattern = compile_regex(alternation, rule.case_sensitive)

    def _whole_word(self, text: str, start: int, end: int) -> bool:
        before = start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start])
        after = end < len(text) and _is_word_char(text[end]) and _is_word_char(text[end - 1])
        return not (before or after)

    def _context_ok(self, text: str, start: int, end: int) -> bool:
        rule = self.rule
        if not (rule.prefix or rule.suffix or rule.exclude_context):
            return True
        window = rule.context_window
        before = [w.casefold() for w in WORD.findall(text[max(0, start - 40 * window) : start])]
        after = [w.casefold() for w in WORD.findall(text[end : end + 40 * window])]
        before, after = before[-window:], after[:window]
        if rule.exclude_context and _phrase_in(before + ["|"] + after, rule.exclude_context):
            return False
        if not (rule.prefix or rule.suffix):
            return True
        return (bool(rule.prefix) and _phrase_in(before, rule.prefix)) or (
            bool(rule.suffix) and _phrase_in(after, rule.suffix)
        )

    def find(self, text: str) -> list[Span]:
        spans = []
        for match in self.pattern.finditer(text):
            start, end = match.start(), match.end()
            if start == end:
                continue
            if self.rule.whole_word and not self._whole_word(text, start, end):
                continue
            if not self._context_ok(text, start, end):
                continue
            normalized = None
            if self.lookup is not None:
                matched = text[start:end]
                normalized = self.lookup.get(
                    matched if self.rule.case_sensitive else matched.casefold()
                )
            spans.append(
                Span(start, end, self.rule.label, self.source, self.rule.confidence, normalized)
            )
        return spans
