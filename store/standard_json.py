"""Standard JSON only (RFC 8259), checked where input arrives: task files, request bodies.

Python's `json` reads more than JSON: NaN and Infinity, numbers too large for a float (as
infinity), lone surrogates (`"\\ud800"`, half of a UTF-16 pair, which no UTF-8 text can
hold) and nesting as deep as the stack allows. Stored, such a value fails every later read
instead (an answer holding it cannot be encoded, PostgreSQL refuses it, a job cannot send
it), so it is refused on the way in, with where it was found.
"""

import json
import math
import re
import sys
from collections.abc import Iterable
from itertools import chain
from typing import Any

from preannotate.store.errors import InvalidInput

MAX_DEPTH = 64
"""How deeply arrays and objects may nest: task data and results need a handful of
levels, and every reader after the store recurses once per level."""

NOT_FINITE = "NaN and Infinity are not JSON; use null or a number"
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTES = range(0xDC80, 0xDD00)
"""How a byte that is not UTF-8 reads once decoded with `errors="surrogateescape"`."""


def loads(text: str | bytes, where: str, line: int | None = None) -> Any:
    """`text` parsed, or InvalidInput naming `where` and the line; `line` says which line of
    `where` the text is (a JSONL line), else it is all of `where`. Check the value with
    `problem` before keeping it."""
    place = where if line is None else f"{where} line {line}"
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        at = f"{where} line {error.lineno}" if line is None else place
        raise InvalidInput(f"{at}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise InvalidInput(
            f"{place}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except RecursionError:
        raise InvalidInput(f"{place}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # the only other one: Python reads no integer this long
        raise InvalidInput(
            f"{place}: a number longer than {sys.get_int_max_str_digits()} digits"
        ) from None


def problem(value: Any, depth: int = 0) -> str | None:
    """Why a value that `json` or `csv` built is not standard JSON, or None when it is.
    Recursion stops at MAX_DEPTH, so a deep value cannot exhaust the stack here."""
    kind = type(value)
    if kind is str:
        found = None if value.isascii() else _SURROGATE.search(value)
        return None if found is None else _surrogate_problem(ord(found.group()))
    if kind is float:
        return None if math.isfinite(value) else NOT_FINITE
    if kind is dict:
        children: Iterable[Any] = chain(value, value.values())
    elif kind is list:
        children = value
    else:
        return None
    if depth >= MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    for child in children:
        if (found_below := problem(child, depth + 1)) is not None:
            return found_below
    return None


def escaped_byte(text: str) -> int | None:
    """The first byte that was not UTF-8 in `text` decoded with `errors="surrogateescape"`
    (as task files are), or None."""
    return next((ord(c) - 0xDC00 for c in text if ord(c) in _ESCAPED_BYTES), None)


def _surrogate_problem(code: int) -> str:
    if code in _ESCAPED_BYTES:
        return f"not UTF-8 text (the byte 0x{code - 0xDC00:02x}, or a lone surrogate \\u{code:x})"
    return f"a lone surrogate \\u{code:x} is not text (surrogates only come in pairs)"


def parse(text: str | bytes, where: str) -> Any:
    """`text` as standard JSON, or InvalidInput naming `where` and what is wrong."""
    value = loads(text, where)
    found = problem(value)
    if found is not None:
        raise InvalidInput(f"{where}: {found}")
    return value
