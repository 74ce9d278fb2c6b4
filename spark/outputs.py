"""Where pre-annotated units are written: one file per input unit, named after it.

A unit is written under a temporary name and renamed when complete, so a file with a
unit's name is always whole: a re-run skips it, and a crash leaves at most a temporary
file, which the next run replaces. The folder must be one every Ray node writes to (a
local folder on one machine, a shared file system on several).
"""

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from preannotate.spark.sources import InputError

Format = Literal["parquet", "jsonl"]
PREDICTION_COLUMNS = {
    "prediction": pa.string(),
    "score": pa.float64(),
    "model_version": pa.string(),
    "config_hash": pa.string(),
    "error": pa.string(),
}
"""Added to the input's columns: the result JSON, its score and provenance, or the error."""
SUFFIX: dict[str, str] = {"parquet": ".parquet", "jsonl": ".jsonl"}


@dataclass(frozen=True)
class Output:
    folder: str
    format: Format = "parquet"

    def path(self, key: str) -> Path:
        return Path(self.folder) / f"part-{key}{SUFFIX[self.format]}"

    def written(self, key: str) -> bool:
        return self.path(key).is_file()

    def writer(self, key: str) -> "UnitWriter":
        return UnitWriter(self.path(key), self.format)


class UnitWriter:
    """Writes one unit's rows batch by batch to a temporary file; `commit` renames it."""

    def __init__(self, target: Path, format: Format):
        self.target = target
        self.format = format
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # a crashed run's
            stale.unlink(missing_ok=True)
        self.temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        self._parquet: pq.ParquetWriter | None = None
        # open across `write` calls until `commit` or `discard` closes it
        lines = open(self.temporary, "w", encoding="utf-8") if format == "jsonl" else None  # noqa: SIM115
        self._lines = lines

    def write(self, table: pa.Table) -> None:
        if self._lines is not None:
            for row in table.to_pylist():
                self._lines.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.temporary, table.schema)
        self._parquet.write_table(table.cast(self._parquet.schema))

    def commit(self) -> None:
        if self._lines is not None:
            self._lines.close()
        elif self._parquet is not None:
            self._parquet.close()
        os.replace(self.temporary, self.target)

    def discard(self) -> None:
        for closeable in (self._lines, self._parquet):
            if closeable is not None:
                closeable.close()
        self.temporary.unlink(missing_ok=True)


def with_predictions(table: pa.Table, rows: list[dict[str, Any]]) -> pa.Table:
    """The input batch with the prediction columns appended, one row each, in order. The
    input's schema metadata is dropped: a file Spark wrote records its own schema there,
    which Spark would read back instead of the columns written."""
    table = table.replace_schema_metadata(None)
    for name, kind in PREDICTION_COLUMNS.items():
        table = table.append_column(
            pa.field(name, kind), pa.array([row.get(name) for row in rows], type=kind)
        )
    return table


def check_free_names(columns: list[str]) -> None:
    taken = sorted(set(columns) & set(PREDICTION_COLUMNS))
    if taken:
        raise InputError(
            f"the input already has column(s) {', '.join(taken)}, which the output adds; "
            "rename them first"
        )
