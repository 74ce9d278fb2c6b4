"""Prompts: zero-shot entity, classification and relation definitions, and external LLM
prompts, defined once and reused by any project, like rules.

A zero-shot prompt names a hub model of kind `zero_shot` that scores text against its
questions or descriptions; an external prompt names a registered LLM provider and the model
(or Azure deployment) it is sent to. A configuration names prompts on `<Label>`,
`<Choices>` and `<Relation>`; `hub/validation.py` checks they fit their place.
"""

import fcntl
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from preannotate.configs.errors import ConfigError, validation_problems
from preannotate.configs.paths import prompts_dir
from preannotate.configs.rules import NAME_PATTERN
from preannotate.configs.textfiles import existing_file, library_entry, read_text

DEFAULT_ZERO_SHOT_MODEL = "zero_shot_minilm"
LOCK_FILE = ".lock"
AUTHORS_FILE = ".authors"
"""Who added each prompt over HTTP (JSON); not `*.json`, so not read as a prompt."""
MAX_TEXT_CHARS = 20_000
"""Questions, descriptions and instructions are short; this bounds what a replica embeds."""


def _nonblank(values: list[str]) -> list[str]:
    if any(not v.strip() for v in values):
        raise ValueError("must not hold empty strings")
    return values


class _Prompt(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(1, ge=1)
    description: str = Field("", max_length=MAX_TEXT_CHARS)


class EntityPrompt(_Prompt):
    """Spans of one label: candidate chunks scored against the label's questions."""

    type: Literal["entity"]
    model: str = DEFAULT_ZERO_SHOT_MODEL
    label: str = Field(min_length=1)
    questions: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)]] = Field(min_length=1)
    threshold: float = Field(0.25, ge=0, le=1, description="the score a chunk needs")
    max_per_document: int | None = Field(None, ge=1)

    _check_questions = field_validator("questions")(_nonblank)

    @property
    def labels(self) -> list[str]:
        return [self.label]


class ClassificationPrompt(_Prompt):
    """Document classes: the document scored against each class's description."""

    type: Literal["classification"]
    model: str = DEFAULT_ZERO_SHOT_MODEL
    classes: dict[str, Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]] = Field(
        min_length=1, description="choice value -> what a document of that class is about"
    )
    threshold: float = Field(
        0.3, ge=0, le=1, description="the share of the softmax over the classes a class needs"
    )

    @property
    def labels(self) -> list[str]:
        return list(self.classes)


class RelationPrompt(_Prompt):
    """A relation between two entity chunks of one sentence, described by a predicate."""

    type: Literal["relation"]
    model: str = DEFAULT_ZERO_SHOT_MODEL
    relation: str = Field(min_length=1, description="the <Relation> value it gives")
    from_label: str = Field(min_length=1)
    to_label: str = Field(min_length=1)
    predicate: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description='e.g. "works for"')
    threshold: float = Field(0.55, ge=0, le=1, description="the score a pair needs")

    @property
    def labels(self) -> list[str]:
        return [self.relation]


class ExternalPrompt(_Prompt):
    """An instruction sent to a registered LLM provider; its answer is validated JSON."""

    type: Literal["external"]
    provider: str = Field(min_length=1, description="a provider registered with `providers add`")
    model: str = Field(min_length=1, description="the provider's model or Azure deployment name")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, description="the instruction")
    output: Literal["entity", "classification"]
    labels: list[str] = Field(
        min_length=1, description="the entity labels or class values it may answer"
    )
    temperature: float = Field(0, ge=0, le=2)
    max_tokens: int = Field(1024, ge=1, le=131_072)

    _check_labels = field_validator("labels")(_nonblank)


Prompt = Annotated[
    EntityPrompt | ClassificationPrompt | RelationPrompt | ExternalPrompt,
    Field(discriminator="type"),
]
ZeroShotPrompt = EntityPrompt | ClassificationPrompt | RelationPrompt
PROMPT: TypeAdapter[Prompt] = TypeAdapter(Prompt)
PROMPT_TYPES = ("entity", "classification", "relation", "external")


def zero_shot_model(prompt: Prompt) -> str | None:
    """The hub model that runs a zero-shot prompt; None for an external prompt."""
    return None if isinstance(prompt, ExternalPrompt) else prompt.model


def parse_prompt(data: object, where: str) -> Prompt:
    try:
        return PROMPT.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, f"prompt {where}")) from None


def read_prompt_file(path: Path) -> list[Prompt]:
    """A JSON prompt, or a list of them."""
    path = Path(path)
    path = existing_file(path)
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{path} is not valid JSON: {exc}"]) from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ConfigError([f"{path} holds no prompt"])
    problems: list[str] = []
    prompts: list[Prompt] = []
    for i, item in enumerate(items):
        try:
            prompts.append(parse_prompt(item, f"#{i + 1} in {path.name}"))
        except ConfigError as exc:
            problems += exc.problems
    names = [p.name for p in prompts]
    problems += [
        f"{path.name} defines the prompt '{n}' twice"
        for n in sorted(set(names))
        if names.count(n) > 1
    ]
    if problems:
        raise ConfigError(problems)
    return prompts


class PromptTaken(Exception):
    """A user tried to change a prompt another user added."""

    def __init__(self, name: str):
        super().__init__(
            f"the prompt '{name}' was added by another user; only they or an admin may "
            "change it (add yours under another name)"
        )


class PromptLibrary:
    """The shared prompt library: one JSON file per prompt in the prompts folder, and who
    added each (`AUTHORS_FILE`), since any configuration naming a prompt runs whatever
    its next version says."""

    def __init__(self, root: Path | None = None):
        self.root = root or prompts_dir()

    def add(self, prompt: Prompt, by: int | None = None) -> Prompt:
        """Store a prompt; re-adding a changed prompt under the same name bumps its version.
        `by` is the user adding it over HTTP: a new name records them as its author, and a
        changed prompt of another author (or of none: an admin's, or one added with the
        CLI on the head) raises `PromptTaken`; an unchanged one is answered as stored.
        `None` (an admin, the operator's CLI) may change any prompt.
        A lock on the folder keeps two adds (two router replicas) from taking one version;
        each file is replaced whole, so a reader never sees half of it."""
        with (self.root / LOCK_FILE).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            existing = self.find(prompt.name)
            authors = {} if by is None else self._authors()
            if existing is not None:
                changed = existing.model_dump(exclude={"version"}) != prompt.model_dump(
                    exclude={"version"}
                )
                if changed and by is not None and authors.get(prompt.name) != by:
                    raise PromptTaken(prompt.name)
                version = max(prompt.version, existing.version + 1) if changed else None
                prompt = prompt.model_copy(update={"version": version}) if version else existing
            elif by is not None:
                self._replace(AUTHORS_FILE, json.dumps(authors | {prompt.name: by}, indent=2))
            self._replace(f"{prompt.name}.json", prompt.model_dump_json(indent=2))
        return prompt

    def _authors(self) -> dict[str, int]:
        """Prompt name -> the id of the user who added it over HTTP; a file that is not that
        is a ConfigError naming it, never a guess about who may change what."""
        file = self.root / AUTHORS_FILE
        if not file.is_file():
            return {}
        try:
            authors = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, RecursionError):
            authors = None
        if not isinstance(authors, dict) or not all(type(v) is int for v in authors.values()):
            raise ConfigError(  # named within the folder: a caller sees no server path
                [
                    f"the prompt library's {AUTHORS_FILE} file is not a JSON object of prompt "
                    "names and user ids; an admin must mend or remove it"
                ]
            )
        return authors

    def _replace(self, name: str, text: str) -> None:
        staging = self.root / f".{name}.adding"
        try:
            staging.write_text(text, encoding="utf-8")
            staging.replace(self.root / name)
        except OSError:  # a folder in its place, say: the library stays as it was
            staging.unlink(missing_ok=True)
            raise

    def find(self, name: str) -> Prompt | None:
        file = self.root / f"{name}.json"
        if not re.fullmatch(NAME_PATTERN, name) or not file.is_file():
            return None
        return library_entry(PROMPT, file)

    def prompts(self) -> list[Prompt]:
        return [library_entry(PROMPT, f) for f in sorted(self.root.glob("*.json"))]
