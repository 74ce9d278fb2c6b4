"""Task files in and project exports out, independent of the database.

Readers are generators that validate as they go and name the line (or list item) of the
first bad task; the store consumes them inside one transaction, so a bad file imports
nothing. A task must be standard JSON (`standard_json`): a lone surrogate or a byte that is
not UTF-8 is refused here, naming its line, rather than stored to fail every page that
holds it. Export shapers turn one task's rows into the Generative AI Lab or Label Studio
JSON layout, one task at a time, so an export never holds a whole project in memory.
"""

import csv
import io
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from preannotate.configs.labeling import LabelingConfig, filled
from preannotate.configs.wording import joined
from preannotate.store import standard_json
from preannotate.store.errors import InvalidInput
from preannotate.store.models import Completion, Prediction, Task

TaskFormat = Literal["json", "jsonl", "csv"]
ExportFormat = Literal["generative-ai-lab", "label-studio"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("generative-ai-lab", "label-studio")

PREDICTION_USERNAME = "preannotate"
"""Who predictions are attributed to in Generative AI Lab exports."""

_SUFFIX_FORMATS: dict[str, TaskFormat] = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}


@dataclass(frozen=True)
class DocumentField:
    """A task field that holds (part of) its document."""

    key: str
    reference: bool = False
    """A scan or PDF (a file name or URL), else text; either non-empty."""
    pages: bool = False
    """A reference to each page, in a non-empty list (`<Image valueList=...>`)."""

    def holds(self, data: dict[str, Any]) -> bool:
        value = data.get(self.key)
        if self.pages:
            return isinstance(value, list) and bool(value) and all(map(filled, value))
        return filled(value)

    def __str__(self) -> str:
        what = "list of pages" if self.pages else "document reference" if self.reference else "text"
        return f"{what} in '{self.key}'"


@dataclass(frozen=True)
class DocumentFields:
    """Where a task holds its document: all the fields of one of `choices`."""

    choices: tuple[tuple[DocumentField, ...], ...]
    refusal: str = ""
    """What a task without them is told; by default, the fields it lacks."""

    @classmethod
    def read_by(cls, labeling: LabelingConfig) -> "DocumentFields":
        """A configured project's tasks hold each field pre-annotation reads
        (`<Text value="$review">` under a `<Labels toName=...>`)."""
        fields = tuple(
            DocumentField(o.value, reference=o.kind == "image", pages=o.value_list)
            for o in labeling.pre_annotated()
        )
        return cls((fields,)) if fields else TEXT_OR_DOCUMENT

    def has_document(self, data: dict[str, Any]) -> bool:
        return any(all(field.holds(data) for field in choice) for choice in self.choices)

    def missing(self, data: dict[str, Any]) -> str:
        lacking = [str(f) for f in self.choices[0] if not f.holds(data)]
        return self.refusal or f"task has no {' and no '.join(lacking)}"

    @property
    def shown(self) -> str:
        """The field pages show a task by: its first text field, else its first field."""
        first = self.choices[0]
        return next((f.key for f in first if not f.reference), first[0].key)

    def columns(self) -> list[set[str]]:
        """The CSV columns that make a header complete: all the keys of one choice."""
        return [{field.key for field in choice} for choice in self.choices]


TEXT_OR_DOCUMENT = DocumentFields(
    (
        (DocumentField("text"),),
        (DocumentField("image", reference=True),),
        (DocumentField("pdf", reference=True),),
    ),
    refusal="task has no text or document: give a non-empty 'text' field, or a document "
    "reference in 'image' or 'pdf'",
)
"""What a task outside a configured project holds: text, or a reference to a scan or PDF."""


TaskSource = str | os.PathLike[str] | IO[str]
Reader = Callable[[IO[str], str, DocumentFields], Iterator[dict[str, Any]]]

_TEXT: dict[str, Any] = {"encoding": "utf-8-sig", "errors": "surrogateescape", "newline": ""}
"""How task files are decoded: BOM-tolerant, as spreadsheets write one; a byte that is not
UTF-8 becomes a lone surrogate, which the task's check then refuses, naming its line."""


def text_stream(binary: IO[bytes]) -> IO[str]:
    """A task file's bytes (an upload) as the text the readers take."""
    return io.TextIOWrapper(binary, **_TEXT)


def task_data(item: Any, where: str, fields: DocumentFields = TEXT_OR_DOCUMENT) -> dict[str, Any]:
    """The `data` of one task given as `{"data": {...}}`, `{"id": .., "data": {...}}` or flat.

    A task must carry a document in one of `fields` (non-empty text, or a reference to a
    scan or PDF), and be standard JSON throughout (its completions too). The `id` of a
    file's task is not kept: the store numbers tasks itself, so importing the same file
    into two projects cannot collide.
    """
    if not isinstance(item, dict):
        raise InvalidInput(f"{where}: a task must be a JSON object, not {type(item).__name__}")
    problem = standard_json.problem(item)
    if problem is not None:
        raise InvalidInput(f"{where}: {problem}")
    data = item["data"] if isinstance(item.get("data"), dict) else item
    if fields.has_document(data):
        return data
    raise InvalidInput(f"{where}: {fields.missing(data)}")


def read_task_records(
    source: TaskSource,
    fmt: TaskFormat | None = None,
    name: str | None = None,
    fields: DocumentFields = TEXT_OR_DOCUMENT,
) -> Iterator[dict[str, Any]]:
    """Tasks from a JSON, JSONL or CSV file (a path, or an open text stream) as records:
    `{"id", "data"}`, plus `completions` (a list of results) where the file has human
    annotations. `id` is the file's own (the position, from 1, where it has none). Each
    task holds its document in one of `fields`.

    Errors name the file as `name` (default: its path, or the stream's name). The format
    comes from that name's suffix unless `fmt` is given. JSONL and CSV are read line by
    line; a JSON file is one list and is parsed whole.
    """
    name = name or _source_name(source)
    if fmt is None:
        fmt = _SUFFIX_FORMATS.get(Path(name).suffix.lower())
        if fmt is None:
            raise InvalidInput(f"{name}: cannot tell the format; use .json, .jsonl or .csv")
    reader = _READERS.get(fmt)
    if reader is None:
        raise InvalidInput(f"unknown task format {fmt!r}; use one of {sorted(_READERS)}")
    return _read(source, name, reader, fields)


def _read(
    source: TaskSource, name: str, reader: Reader, fields: DocumentFields
) -> Iterator[dict[str, Any]]:
    try:
        with _open(source) as stream:
            yield from reader(stream, name, fields)
    except UnicodeDecodeError as error:  # a caller's stream that decodes strictly
        raise InvalidInput(f"{name}: not UTF-8 text ({error.reason})") from None


def _source_name(source: TaskSource) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", "<stream>"))


def _open(source: TaskSource) -> AbstractContextManager[IO[str]]:
    """Open a path as `_TEXT` says; leave a caller's stream open."""
    if isinstance(source, str | os.PathLike):
        return open(source, **_TEXT)
    return nullcontext(source)


def _read_json(stream: IO[str], name: str, fields: DocumentFields) -> Iterator[dict[str, Any]]:
    items = standard_json.loads(stream.read(), name)
    if not isinstance(items, list):
        raise InvalidInput(f"{name}: expected a JSON list of tasks, not {type(items).__name__}")
    for number, item in enumerate(items, start=1):
        yield _record(item, f"{name} task {number}", number, fields)


def _record(item: Any, where: str, position: int, fields: DocumentFields) -> dict[str, Any]:
    data = task_data(item, where, fields)
    task_id = item.get("id") if data is not item else None
    record = {"id": position if task_id is None else task_id, "data": data}
    annotations = (item.get("completions") or item.get("annotations")) if data is not item else None
    if annotations:
        record["completions"] = _completion_results(annotations, where)
    return record


def _completion_results(annotations: Any, where: str) -> list[list[dict[str, Any]]]:
    """The results of a task's human annotations (`completions` in Generative AI Lab,
    `annotations` in Label Studio exports), imported as completions. An annotation its
    annotator skipped (Label Studio's `was_cancelled`) is none: it is left out, as the
    Label Studio webhook leaves it out."""
    if isinstance(annotations, list) and all(isinstance(a, dict) for a in annotations):
        kept = [a for a in annotations if a.get("was_cancelled") is not True]
        if all(isinstance(a.get("result"), list) for a in kept):
            return [a["result"] for a in kept]
    raise InvalidInput(f"{where}: completions must be a list of objects with a 'result' list")


def _read_jsonl(stream: IO[str], name: str, fields: DocumentFields) -> Iterator[dict[str, Any]]:
    position = 0
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        item = standard_json.loads(line, name, line=number)
        position += 1
        yield _record(item, f"{name} line {number}", position, fields)


def _read_csv(stream: IO[str], name: str, fields: DocumentFields) -> Iterator[dict[str, Any]]:
    """Rows of a CSV with a column of `fields` (`text`, say); every column goes into the
    task's data."""
    reader = csv.DictReader(stream)
    try:
        columns = reader.fieldnames
        byte = standard_json.escaped_byte(",".join(columns or []))
        if byte is not None:
            raise InvalidInput(
                f"{name} line {reader.line_num}: the header is not UTF-8 text (byte "
                f"0x{byte:02x}); save the file as UTF-8"
            )
        given, wanted = set(columns or []), fields.columns()
        if not any(keys <= given for keys in wanted):
            lacking = [sorted(keys - given) for keys in wanted]
            named = (
                " and ".join(f"'{key}'" for key in lacking[0])
                if len(lacking) == 1
                else joined([f"'{keys[0]}'" for keys in lacking], "or")
            )
            raise InvalidInput(f"{name}: no {named} column (columns: {', '.join(columns or [])})")
        for position, row in enumerate(reader, start=1):
            where = f"{name} line {reader.line_num}"
            if None in row:
                raise InvalidInput(f"{where}: more values than the {len(columns)} columns")
            cells = {key: value for key, value in row.items() if value is not None}
            data = task_data(cells, where, fields)
            yield {"id": position, "data": data}
    except csv.Error as error:
        raise InvalidInput(f"{name} line {reader.line_num}: {error}") from None


_READERS: dict[str, Reader] = {
    "json": _read_json,
    "jsonl": _read_jsonl,
    "csv": _read_csv,
}


def generative_ai_lab_task(
    task: Task,
    predictions: list[Prediction],
    completions: list[Completion],
    usernames: dict[int, str],
) -> dict[str, Any]:
    """One task in Generative AI Lab's export layout; `usernames` maps completion authors."""
    exported_completions = []
    for completion in completions:
        item: dict[str, Any] = {
            "id": completion.id,
            "result": completion.result,
            "created_at": completion.created_at.isoformat(),
            "updated_at": completion.updated_at.isoformat(),
        }
        if completion.created_by is not None:
            item["created_username"] = usernames[completion.created_by]
        if completion.copied_from_prediction_id is not None:
            item["copied_from"] = f"prediction: {completion.copied_from_prediction_id}"
        exported_completions.append(item)
    return {
        "id": task.id,
        "data": task.data,
        "created_at": task.created_at.isoformat(),
        "predictions": [
            {
                "id": prediction.id,
                "result": prediction.result,
                "score": prediction.score,
                "model_version": prediction.model_version,
                "created_at": prediction.created_at.isoformat(),
                "created_username": PREDICTION_USERNAME,
            }
            for prediction in predictions
        ],
        "completions": exported_completions,
    }


def label_studio_task(
    task: Task, predictions: list[Prediction], completions: list[Completion]
) -> dict[str, Any]:
    """One task in Label Studio's JSON import layout (human work goes under `annotations`)."""
    return {
        "id": task.id,
        "data": task.data,
        "predictions": [
            {
                "model_version": prediction.model_version,
                "score": prediction.score,
                "result": prediction.result,
            }
            for prediction in predictions
        ],
        "annotations": [
            {"id": completion.id, "result": completion.result} for completion in completions
        ],
    }
