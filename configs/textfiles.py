"""Reading the text files users hand us: project files, labeling configs, rules, manifests.

They come from other tools (spreadsheets save CSV as UTF-16, older editors save latin-1), so
a file is decoded as UTF-8, or as the encoding its byte-order mark names (an XML file may
also declare its encoding, as XML allows). A file that does not decode is refused with its
name and the byte at fault, never read as garbage.
"""

import codecs
import json
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from preannotate.configs.errors import ConfigError, validation_problems

BYTE_ORDER_MARKS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
T = TypeVar("T")
XML_DECLARATION = re.compile(rb"""<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z][\w.:-]*)["']""")


def _encoding(data: bytes, xml: bool) -> str:
    for mark, encoding in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return encoding
    declared = XML_DECLARATION.match(data) if xml else None
    return declared.group(1).decode("ascii") if declared else "utf-8"


def _named(path: Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def _file_path(path: Path, what: str) -> Path:
    """`path`, or a ConfigError saying it is a folder where a file belongs; `what` names the
    file in the message, as in "output out is a folder; give a file"."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError([f"{_named(path, what)} is a folder; give a file"])
    return path


def existing_file(path: Path, what: str = "") -> Path:
    """`path`, or a ConfigError saying it is a folder or does not exist ("tasks file
    x.jsonl does not exist")."""
    path = _file_path(path, what)
    if not path.is_file():
        raise ConfigError([f"{_named(path, what)} does not exist"])
    return path


def output_file(path: Path, what: str = "output") -> Path:
    """`path` as a file to write, or a ConfigError saying it is a folder or its folder does
    not exist."""
    path = _file_path(path, what)
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError([f"{_named(path, what)}: {path.parent} is a file, not a folder"])
    if not path.parent.is_dir():
        raise ConfigError([f"{_named(path, what)}: the folder {path.parent} does not exist"])
    return path


def read_text(path: Path, xml: bool = False) -> str:
    """The text of a file, or a ConfigError naming it and saying what to fix."""
    data = Path(path).read_bytes()
    encoding = _encoding(data, xml)
    if encoding.startswith("utf-8") and b"\x00" in data:
        raise ConfigError(
            [f"{path} holds NUL bytes (UTF-16 without a byte-order mark?); save the file as UTF-8"]
        )
    try:
        return data.decode(encoding)
    except LookupError:
        raise ConfigError([f"{path} declares an unknown encoding '{encoding}'"]) from None
    except UnicodeDecodeError as exc:
        offset = exc.start + len(data) - len(exc.object)
        name = "UTF-8" if encoding.startswith("utf-8") else encoding.upper()
        raise ConfigError(
            [
                f"{path} is not valid {name} text: byte 0x{exc.object[exc.start]:02x} "
                f"at offset {offset} cannot be decoded; save the file as UTF-8"
            ]
        ) from None


def read_json_as(path: Path, adapter: TypeAdapter[Any]) -> Any:
    """A JSON data file checked against `adapter`; a ValueError naming the file and each
    problem when it is not valid JSON or does not fit."""
    try:
        return adapter.validate_python(json.loads(read_text(path)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        raise ValueError("; ".join(validation_problems(exc, str(path)))) from None


def library_entry(adapter: TypeAdapter[T], file: Path) -> T:
    """A file of a shared library (a rule, a prompt) as `adapter` reads it; one that is not
    such an entry is a ConfigError naming it, never a traceback for every command that
    lists the library."""
    try:
        return adapter.validate_json(file.read_bytes())
    except ValidationError as exc:
        problems = validation_problems(exc, f"the library file {file.name}")
        raise ConfigError(
            [*problems, f"mend or remove {file.name} in {file.parent.name}/"]
        ) from None
