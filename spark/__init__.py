"""Pre-annotate Spark DataFrames, tables and Parquet/JSONL/CSV files on the Ray cluster."""
