"""Regex and dictionary rules: context, whole words, cases, and linear-time matching."""

import pytest

from preannotate.annotators.rules import RuleMatcher
from preannotate.configs.errors import ConfigError
from preannotate.configs.rules import Rule, RuleLibrary, read_rule_file


def found(rule: dict, text: str) -> list[tuple[str, str | None]]:
    return [(text[s.start : s.end], s.normalized) for s in RuleMatcher(Rule(**rule)).find(text)]


DOSE = {"name": "dose", "label": "DOSAGE", "kind": "regex", "regex": r"\d+\s?mg"}


def test_regex_rule_finds_spans_with_exact_offsets() -> None:
    text = "Take 500 mg now and 20mg later."
    spans = RuleMatcher(Rule(**DOSE)).find(text)
    assert [(s.start, s.end, s.label) for s in spans] == [(5, 11, "DOSAGE"), (20, 24, "DOSAGE")]
    assert spans[0].source.as_json() == {"type": "rule", "name": "dose", "version": "1"}


def test_whole_word_and_case_options() -> None:
    rule = {"name": "cat", "label": "ANIMAL", "kind": "regex", "regex": "cat"}
    assert found(rule, "Cat catalog cat") == [("Cat", None), ("cat", None)]
    assert found({**rule, "case_sensitive": True}, "Cat cat") == [("cat", None)]
    assert found({**rule, "whole_word": False}, "catalog") == [("cat", None)]


def test_prefix_and_suffix_context_within_the_window() -> None:
    rule = {
        "name": "t",
        "label": "TICKER",
        "kind": "regex",
        "regex": "[A-Z]{2,5}",
        "case_sensitive": True,
        "prefix": ["NASDAQ"],
        "suffix": ["shares"],
        "context_window": 2,
    }
    text = "NASDAQ: MSFT rose. IBM shares fell. The CEO of ACME said NASDAQ is up, far from XYZ."
    assert [t for t, _ in found(rule, text)] == ["MSFT", "IBM"]


def test_excluded_context_drops_the_match() -> None:
    rule = {
        "name": "drug",
        "label": "DRUG",
        "kind": "dictionary",
        "dictionary": {"amoxicillin": ["amoxil"]},
        "exclude_context": ["allergic to"],
        "context_window": 3,
    }
    text = "Allergic to amoxicillin. Started Amoxil 500 mg."
    assert found(rule, text) == [("Amoxil", "amoxicillin")]


def test_dictionary_maps_synonyms_to_the_normalized_value() -> None:
    rule = {
        "name": "freq",
        "label": "FREQ",
        "kind": "dictionary",
        "dictionary": {"twice daily": ["bid", "b.i.d.", "twice a day"]},
    }
    text = "Metformin BID; later twice a day, then b.i.d. again. Not: bidding."
    assert found(rule, text) == [
        ("BID", "twice daily"),
        ("twice a day", "twice daily"),
        ("b.i.d.", "twice daily"),
    ]


@pytest.mark.timeout(10)
def test_catastrophic_regex_runs_in_linear_time() -> None:
    rule = {"name": "evil", "label": "X", "kind": "regex", "regex": "(a+)+$", "whole_word": False}
    assert found(rule, "a" * 200_000 + "!") == []
    assert found({**rule, "regex": "(x+x+)+y"}, "x" * 100_000) == []


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?<=a)b", r"a(?!b)"])
def test_regex_needing_backtracking_is_refused_clearly(pattern: str) -> None:
    with pytest.raises(ValueError, match="linear-time regex engine"):
        Rule(name="r", label="X", kind="regex", regex=pattern)


def test_library_versions_changed_rules(library: RuleLibrary, tmp_path) -> None:
    first = library.add(Rule(**DOSE))
    same = library.add(Rule(**DOSE))
    changed = library.add(Rule(**{**DOSE, "regex": r"\d+\s?(mg|g)"}))
    assert (first.version, same.version, changed.version) == (1, 1, 2)
    assert [r.name for r in library.rules()] == ["dose"] and library.find("dose").version == 2
    assert library.find("../dose") is None


def test_dictionary_csv_and_bad_rule_files(tmp_path) -> None:
    csv_file = tmp_path / "drugs.csv"
    csv_file.write_text("metformin,glucophage\nwarfarin,coumadin,jantoven\n")
    [rule] = read_rule_file(csv_file, label="DRUG")
    assert rule.name == "drugs" and rule.dictionary["warfarin"] == ["coumadin", "jantoven"]
    with pytest.raises(ConfigError, match="give the label"):
        read_rule_file(csv_file)
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "label": "X", "kind": "regex"}')
    with pytest.raises(ConfigError, match="a regex rule needs 'regex'"):
        read_rule_file(bad)
