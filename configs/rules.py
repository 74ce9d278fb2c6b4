"""Rules: regex and dictionary matchers defined once and reused by any project.

Patterns compile with RE2, whose matching time is linear in the text, so a rule such as
`(a+)+$` cannot hang a server on a hostile document; constructs RE2 cannot run in linear
time (backreferences, lookaround) are refused when the rule is defined.
"""

import csv
import io
import json
import re
from pathlib import Path
from typing import Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from preannotate.configs.errors import ConfigError, validation_problems
from preannotate.configs.paths import rules_dir
from preannotate.configs.textfiles import existing_file, library_entry, read_text

MAX_PATTERN_CHARS = 5_000
MAX_DICTIONARY_TERMS = 1_000_000
"""Dictionaries compile to an automaton, not a regex: this bounds a replica's memory."""
MAX_REGEX_MEMORY = 64 << 20
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


def regex_options(case_sensitive: bool) -> re2.Options:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.max_mem = MAX_REGEX_MEMORY
    options.log_errors = False
    return options


def compile_regex(pattern: str, case_sensitive: bool) -> re2._Regexp:
    """Compile with RE2 or raise ValueError saying why the pattern cannot be used."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"the pattern is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, regex_options(case_sensitive))
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"the pattern cannot be used ({reason}); rules run on a linear-time regex engine, "
            "which has no backreferences or lookaround"
        ) from None


class Rule(BaseModel):
    """A matcher that proposes spans with one label.

    Context: when `prefix` or `suffix` is set, a match is kept only if one of those words or
    phrases occurs within `context_window` words before (prefix) or after (suffix) it; a
    match with any `exclude_context` word in that window on either side is dropped.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    label: str = Field(min_length=1, description="the label of the spans it proposes")
    kind: Literal["regex", "dictionary"]
    version: int = Field(1, ge=1)
    regex: str | None = None
    dictionary: dict[str, list[str]] | None = Field(
        None, description="normalized value -> synonyms; the value itself matches too"
    )
    case_sensitive: bool = False
    whole_word: bool = True
    prefix: list[str] = []
    suffix: list[str] = []
    exclude_context: list[str] = []
    context_window: int = Field(5, ge=1, le=100, description="in words")
    confidence: float = Field(1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _check_kind(self) -> "Rule":
        if self.kind == "regex":
            if not self.regex or self.dictionary is not None:
                raise ValueError("a regex rule needs 'regex' and no 'dictionary'")
            compile_regex(self.regex, self.case_sensitive)
        else:
            if not self.dictionary or self.regex is not None:
                raise ValueError("a dictionary rule needs a non-empty 'dictionary' and no 'regex'")
            terms = [t for value, synonyms in self.dictionary.items() for t in (value, *synonyms)]
            if any(not t.strip() for t in terms):
                raise ValueError("dictionary terms must not be empty")
            if len(terms) > MAX_DICTIONARY_TERMS:
                raise ValueError(
                    f"the dictionary has {len(terms):,} terms; the limit is "
                    f"{MAX_DICTIONARY_TERMS:,} (split it into several rules)"
                )
        return self


RULE: TypeAdapter[Rule] = TypeAdapter(Rule)


def parse_rule(data: object, where: str) -> Rule:
    try:
        return Rule.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, f"rule {where}")) from None


def dictionary_from_csv(text: str, where: str = "the dictionary CSV") -> dict[str, list[str]]:
    """First column the normalized value, the other columns its synonyms."""
    entries: dict[str, list[str]] = {}
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            cells = [c.strip() for c in row if c.strip()]
            if cells:
                entries.setdefault(cells[0], []).extend(cells[1:])
    except csv.Error as exc:
        raise ConfigError([f"{where} line {reader.line_num}: {exc}"]) from None
    return entries


def read_rule_file(path: Path, label: str | None = None, name: str | None = None) -> list[Rule]:
    """A JSON rule (or list of rules), or a dictionary CSV (which needs `label`)."""
    path = existing_file(path)
    text = read_text(path)
    if path.suffix.lower() == ".csv":
        if not label:
            raise ConfigError([f"{path} is a dictionary CSV; give the label its matches get"])
        data = {
            "name": name or path.stem,
            "label": label,
            "kind": "dictionary",
            "dictionary": dictionary_from_csv(text, path.name),
        }
        return [parse_rule(data, f"'{data['name']}'")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path} is not valid JSON: {exc}"]) from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ConfigError([f"{path} holds no rule"])
    return [parse_rule(item, f"#{i + 1} in {path.name}") for i, item in enumerate(items)]


class RuleLibrary:
    """The shared rule library: one JSON file per rule in the rules folder."""

    def __init__(self, root: Path | None = None):
        self.root = root or rules_dir()

    def add(self, rule: Rule) -> Rule:
        """Store a rule; re-adding a changed rule under the same name bumps its version."""
        existing = self.find(rule.name)
        if existing is not None and existing.model_dump(exclude={"version"}) != rule.model_dump(
            exclude={"version"}
        ):
            rule = rule.model_copy(update={"version": max(rule.version, existing.version + 1)})
        (self.root / f"{rule.name}.json").write_text(
            rule.model_dump_json(indent=2), encoding="utf-8"
        )
        return rule

    def find(self, name: str) -> Rule | None:
        file = self.root / f"{name}.json"
        if not re.fullmatch(NAME_PATTERN, name) or not file.is_file():
            return None
        return library_entry(RULE, file)

    def rules(self) -> list[Rule]:
        return [library_entry(RULE, f) for f in sorted(self.root.glob("*.json"))]
