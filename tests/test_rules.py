"""Regex and dictionary rules: context, whole words, cases, linear-time matching, large
dictionaries, and rule files from the command line."""

import codecs
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from preannotate.annotators.pipeline import Pipeline
from preannotate.annotators.rules import RuleMatcher
from preannotate.annotators.sentences import sentence_starts
from preannotate.client.cli import app
from preannotate.configs import rules as rules_module
from preannotate.configs.errors import ConfigError
from preannotate.configs.project import load_project_config
from preannotate.configs.rules import Rule, RuleLibrary, read_rule_file
from preannotate.hub.validation import validate_config
from tests.conftest import EXAMPLES

runner = CliRunner()


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


def test_one_segmentation_splits_sentences_without_a_parser() -> None:
    text = "Dr. Smith saw her at 3 p.m. today. She is fine! Take it b.i.d.? Yes."
    starts = sentence_starts(text)
    assert [text[a:b].strip() for a, b in zip(starts, [*starts[1:], len(text)], strict=True)] == [
        "Dr. Smith saw her at 3 p.m. today.",
        "She is fine!",
        "Take it b.i.d.?",
        "Yes.",
    ]


def test_prefix_and_suffix_context_stop_at_sentence_ends() -> None:
    rule = {
        "name": "t",
        "label": "TICKER",
        "kind": "regex",
        "regex": "[A-Z]{2,5}",
        "case_sensitive": True,
        "prefix": ["NASDAQ"],
        "suffix": ["shares"],
        "context_window": 3,
    }
    text = "Listed on NASDAQ. MSFT rose. Then IBM. Shares fell. On NASDAQ: AAPL rose."
    assert [t for t, _ in found(rule, text)] == ["AAPL"]


def test_excluded_context_of_the_previous_sentence_keeps_the_drug() -> None:
    config = validate_config(load_project_config(EXAMPLES / "posology" / "project.json"))
    text = "Patient is allergic to amoxicillin. Prescribed ibuprofen 400 mg PO as needed for pain."
    [prediction] = Pipeline(config).annotate([{"id": 2, "data": {"text": text}}])
    spans = [i["value"] for i in prediction.result if i["type"] == "labels"]
    drugs = [v["text"] for v in spans if v["labels"] == ["DRUG"]]
    assert drugs == ["ibuprofen"]


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


def test_a_longest_term_that_is_not_a_whole_word_leaves_the_shorter_one() -> None:
    rule = {
        "name": "insulin",
        "label": "DRUG",
        "kind": "dictionary",
        "dictionary": {"insulin": [], "insulin glargine": ["lantus"]},
    }
    text = "Insulin glargine 10 units, LANTUS at night; insulin glarginex; insulins."
    assert found(rule, text) == [
        ("Insulin glargine", "insulin glargine"),
        ("LANTUS", "insulin glargine"),
        ("insulin", "insulin"),
    ]


@pytest.mark.timeout(60)
def test_dictionary_of_100k_entries_builds_fast_and_annotates_exactly() -> None:
    entries = {f"compound {i:06d}": [f"cpd{i:06d}", f"Zx-{i}"] for i in range(100_000)}
    entries["Straße A"] = []
    rule = Rule(name="compounds", label="DRUG", kind="dictionary", dictionary=entries)
    started = time.perf_counter()
    matcher = RuleMatcher(rule)
    build_s = time.perf_counter() - started
    text = (
        "Gave Compound 012345 and CPD099999; zx-7 twice. Not cpd0000011 nor xcpd000001. "
        "STRAßE a. compound 000001. "
    ) * 2
    spans = matcher.find(text)
    one_pass = [(text[s.start : s.end], s.normalized) for s in spans]
    assert one_pass == 2 * [
        ("Compound 012345", "compound 012345"),
        ("CPD099999", "compound 099999"),
        ("zx-7", "compound 000007"),
        ("STRAßE a", "Straße A"),
        ("compound 000001", "compound 000001"),
    ]
    assert build_s < 20, f"building the 100k-entry dictionary took {build_s:.1f} s"
    started = time.perf_counter()
    matcher.find("Gave compound 000042 today. " * 20_000)
    assert time.perf_counter() - started < 5


def test_dictionary_over_the_limit_is_refused_when_defined(monkeypatch) -> None:
    monkeypatch.setattr(rules_module, "MAX_DICTIONARY_TERMS", 3)
    with pytest.raises(ValueError, match="has 4 terms; the limit is 3"):
        Rule(name="d", label="X", kind="dictionary", dictionary={"a": ["b"], "c": ["d"]})


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


def test_rules_add_reads_csv_with_a_byte_order_mark(tmp_path: Path, library: RuleLibrary) -> None:
    for encoding, name in [("utf-16", "utf16"), ("utf-8-sig", "excel")]:
        csv_file = tmp_path / f"{name}.csv"
        csv_file.write_bytes("métformine,glucophage\nwarfarin,coumadin\n".encode(encoding))
        result = runner.invoke(app, ["rules", "add", str(csv_file), "--label", "DRUG"])
        assert result.exit_code == 0, result.stderr
        stored = library.find(name)
        assert stored is not None
        assert stored.dictionary == {"métformine": ["glucophage"], "warfarin": ["coumadin"]}


@pytest.mark.parametrize(
    "name, content, problem",
    [
        (
            "drugs.csv",
            "métformine,glucophage\n".encode("latin-1"),
            "not valid UTF-8 text: byte 0xe9",
        ),
        ("drugs.csv", "metformin,glucophage\n".encode("utf-16-le"), "holds NUL bytes"),
        ("drugs.csv", codecs.BOM_UTF16_LE + b"m\x00e\x00t", "is not valid UTF-16 text"),
        (
            "rule.json",
            '{"name": "d", "label": "X", "kind": "regex", "regex": "café"}'.encode("latin-1"),
            "not valid UTF-8 text: byte 0xe9",
        ),
    ],
    ids=["latin-1-csv", "utf-16-csv-without-mark", "truncated-utf-16-csv", "latin-1-json"],
)
def test_rules_add_refuses_a_file_that_is_not_text(
    tmp_path: Path, library: RuleLibrary, name: str, content: bytes, problem: str
) -> None:
    file = tmp_path / name
    file.write_bytes(content)
    result = runner.invoke(app, ["rules", "add", str(file), "--label", "DRUG"])
    assert result.exit_code == 2
    assert result.stderr.count("error:") == 1
    assert str(file) in result.stderr and problem in result.stderr
    assert library.rules() == []
