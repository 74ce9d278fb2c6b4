"""Pre-annotate Spark DataFrames, tables and Parquet/JSONL/CSV files on the Ray cluster."""

from preannotate.spark.api import Summary, preannotate, preannotate_files, run_files
from preannotate.spark.session import spark_session, stop_spark
from preannotate.spark.sources import InputError

__all__ = [
    "InputError",
    "Summary",
    "preannotate",
    "preannotate_files",
    "run_files",
    "spark_session",
    "stop_spark",
]
