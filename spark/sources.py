"""What is pre-annotated, cut into units: the input partitions or files that are read,
annotated and written one at a time, each under a name derived from the input.

A unit's name is a hash of the input's identity (resolved file path, or a Spark plan's
semantic hash) and its index, so a re-run over the same input finds the units it already
wrote. Units are read on the Ray workers, in row batches, never on the driver.
"""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
"""File suffixes read as input, and the format each is read as."""
UNIT_ROWS = 10_000
"""Parquet row groups are gathered into units of at least this many rows (resume steps)."""
READ_BLOCK_BYTES = 1 << 20


class InputError(ValueError):
    """Input the user can fix: a missing path, an unknown format, no text column."""


class Reader(Protocol):
    def batches(self, rows: int) -> Iterator[pa.Table]:
        """The unit's rows, `rows` at a time."""
        ...


def _rebatch(blocks: Iterator[pa.Table | pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly `rows` rows (the last one shorter) from blocks of any size; an
    empty unit yields one empty table, so its output still records its columns."""
    pending: list[pa.Table] = []
    held = 0
    yielded = False
    for block in blocks:
        table = pa.Table.from_batches([block]) if isinstance(block, pa.RecordBatch) else block
        pending.append(table)
        held += table.num_rows
        while held >= rows:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, rows)
            yielded = True
            rest = joined.slice(rows)
            pending, held = [rest], rest.num_rows
    if held or not yielded:
        yield pa.concat_tables(pending) if pending else pa.table({})


@dataclass(frozen=True)
class ParquetRowGroups:
    path: str
    row_groups: tuple[int, ...]

    def batches(self, rows: int) -> Iterator[pa.Table]:
        file = pq.ParquetFile(self.path)
        return _rebatch(file.iter_batches(batch_size=rows, row_groups=list(self.row_groups)), rows)


@dataclass(frozen=True)
class JsonLines:
    path: str

    def batches(self, rows: int) -> Iterator[pa.Table]:
        options = pa_json.ReadOptions(block_size=READ_BLOCK_BYTES)
        try:
            reader = pa_json.open_json(self.path, read_options=options)
        except pa.ArrowInvalid as exc:
            if Path(self.path).stat().st_size == 0:
                return iter([pa.table({})])
            raise InputError(f"{self.path} is not JSON Lines: {exc}") from None
        return _rebatch(reader, rows)


@dataclass(frozen=True)
class CsvFile:
    path: str

    def batches(self, rows: int) -> Iterator[pa.Table]:
        options = pa_csv.ReadOptions(block_size=READ_BLOCK_BYTES)
        return _rebatch(pa_csv.open_csv(self.path, read_options=options), rows)


@dataclass(frozen=True)
class Unit:
    key: str
    """Stable across runs over the same input: names the unit's output file."""
    where: str
    """The unit as a user knows it, for messages: a file, its row groups, a partition."""
    reader: Reader


def input_key(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in FORMATS:
            known = ", ".join(sorted(FORMATS))
            raise InputError(f"cannot read {path}: the input must be one of {known}")
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in FORMATS and not p.name.startswith((".", "_"))
    )
    if not files:
        raise InputError(f"no .parquet, .jsonl or .csv files in {path}")
    kinds = {FORMATS[p.suffix.lower()] for p in files}
    if len(kinds) > 1:
        raise InputError(f"{path} mixes {' and '.join(sorted(kinds))} files; give one format")
    return files


def _columns(file: Path) -> list[str]:
    """The file's column names, read from its head only."""
    kind = FORMATS[file.suffix.lower()]
    try:
        if kind == "parquet":
            return pq.read_schema(file).names
        if file.stat().st_size == 0:
            return []
        reader: Reader = JsonLines(str(file)) if kind == "jsonl" else CsvFile(str(file))
        head = next(iter(reader.batches(1)))
        return head.schema.names
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {file}: {exc}") from None


def check_text_column(columns: list[str], text_col: str, where: str) -> None:
    if text_col not in columns:
        shown = ", ".join(columns) or "none"
        raise InputError(f"{where} has no column {text_col!r} (its columns: {shown})")


def file_units(path: Path, text_col: str) -> list[Unit]:
    """The units of a Parquet, JSON Lines or CSV file or folder: Parquet row groups gathered
    to about UNIT_ROWS rows, and one unit per JSON Lines or CSV file."""
    units = []
    for file in _files(path):
        resolved = str(file.resolve())
        columns = _columns(file)
        if columns:
            check_text_column(columns, text_col, str(file))
        kind = FORMATS[file.suffix.lower()]
        key = input_key(f"{resolved}|{UNIT_ROWS}")
        if kind == "jsonl":
            units.append(Unit(f"{key}-00000", str(file), JsonLines(resolved)))
        elif kind == "csv":
            units.append(Unit(f"{key}-00000", str(file), CsvFile(resolved)))
        else:
            units += _parquet_units(file, key)
    return units


def _parquet_units(file: Path, key: str) -> list[Unit]:
    metadata = pq.read_metadata(file)
    groups: list[list[int]] = [[]]
    rows = 0
    for index in range(metadata.num_row_groups):
        if rows >= UNIT_ROWS:
            groups.append([])
            rows = 0
        groups[-1].append(index)
        rows += metadata.row_group(index).num_rows
    resolved = str(file.resolve())
    return [
        Unit(
            f"{key}-{n:05d}",
            f"{file} row groups {g[0]}-{g[-1]}" if g else str(file),
            ParquetRowGroups(resolved, tuple(g)),
        )
        for n, g in enumerate(groups)
    ]


def dataframe_keys(df: "DataFrame", text_col: str, name: str | None) -> tuple[str, list[str]]:
    """The input key and the unit names of a DataFrame's partitions, known before any
    partition is computed. The identity is `name`, else the semantic hash of the
    DataFrame's plan (stable for tables and files; a DataFrame built from driver-side data
    needs a `name` to be resumed)."""
    check_text_column(df.columns, text_col, "the DataFrame")
    partitions = df.rdd.getNumPartitions()
    if partitions == 0:
        raise InputError("the DataFrame has no partitions")
    identity = name if name is not None else f"plan:{df.semanticHash()}"
    key = input_key(f"{identity}|{partitions}")
    return key, [f"{key}-{index:05d}" for index in range(partitions)]


STAGED_PART = re.compile(r"part-(\d+)-")


def staged_units(df: "DataFrame", keys: list[str], staging: Path) -> list[Unit]:
    """The DataFrame's partitions as Parquet files written by Spark's executors (Ray actors
    under RayDP) into `staging`, one file per non-empty partition, each the unit of its
    partition index. A staging folder completed by an earlier run (`_SUCCESS`) is reused."""
    if not (staging / "_SUCCESS").is_file():
        df.write.mode("overwrite").parquet(str(staging))
    units = []
    for file in sorted(staging.glob("part-*.parquet")):
        match = STAGED_PART.match(file.name)
        if match is None or int(match.group(1)) >= len(keys):
            raise RuntimeError(f"unexpected file {file} in the staging folder {staging}")
        index = int(match.group(1))
        units.append(
            Unit(keys[index], f"partition {index}", ParquetRowGroups(str(file), _all_groups(file)))
        )
    return units


def _all_groups(file: Path) -> tuple[int, ...]:
    return tuple(range(pq.read_metadata(file).num_row_groups))
