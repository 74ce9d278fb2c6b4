"""Pre-annotating a Parquet file through `preannotate.spark` vs a bulk job of the store, on
the same texts and the same server; and the driver's peak memory for a small and a large
input.

Run: `.venv/bin/python bench/spark.py [--rows 100000] [--small 10000]`.
It starts a local Ray (2 CPUs) with the API, deploys the news example with one replica,
imports `--rows` tasks and writes the same texts to a Parquet file. Then it measures
tasks/s of a bulk job of the store; of `preannotate.spark.preannotate` on a DataFrame of a
RayDP session reading that file; and of the same path without Spark (`run_files`). Each
driver runs in a fresh process, which reports its own peak RSS (the Python driver; the
Spark JVM is a process of its own; sampled every 20 ms, from before the run starts), for
`--small` and for `--rows` rows.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREANNOTATE_HOME", tempfile.mkdtemp(prefix="preannotate-bench-"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402

from bench.bulk import PeakRss, deployed, new_project, timed_job  # noqa: E402
from bench.workload import example_texts, local_api  # noqa: E402
from preannotate.client.api import Client  # noqa: E402

ROW_GROUP = 10_000


def write_input(path: Path, rows: int) -> Path:
    texts = example_texts("news", rows)
    table = pa.table({"doc": list(range(rows)), "text": texts})
    pq.write_table(table, path, row_group_size=ROW_GROUP)
    return path


def driver(args: argparse.Namespace) -> None:
    """One measured run in this fresh process; prints its figures as JSON."""
    from preannotate.cluster.ray_cluster import connect

    connect(args.address)
    peak = PeakRss(psutil.Process())  # ru_maxrss would start at the parent's peak
    start = time.perf_counter()
    if args.spark:
        from preannotate.spark import preannotate, spark_session

        spark = spark_session("bench", executor_memory="1G")
        df = spark.read.parquet(args.driver)
        start = time.perf_counter()  # the RayDP session's start is not the path's cost
        preannotate(df, args.project, output=args.output)
    else:
        from preannotate.spark import run_files

        run_files(args.driver, args.project, args.output)
    seconds = time.perf_counter() - start
    written = sum(pq.read_metadata(p).num_rows for p in Path(args.output).glob("part-*"))
    failed = sum(
        pq.read_table(p, columns=["error"]).column("error").null_count
        for p in Path(args.output).glob("part-*")
    )
    print(json.dumps({"seconds": seconds, "rows": written, "ok": failed, "peak": peak.stop()}))


def measured(path: Path, project: int, address: str, spark: bool, output: Path) -> dict[str, float]:
    command = [sys.executable, __file__, "--driver", str(path), "--project", str(project)]
    command += ["--address", address, "--output", str(output)] + (["--spark"] if spark else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"driver failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--project", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--spark", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver(args)
        return

    work = Path(tempfile.mkdtemp(prefix="preannotate-spark-bench-"))
    inputs = {n: write_input(work / f"in-{n}.parquet", n) for n in (args.small, args.rows)}
    url, token = local_api()
    address = ray.get_runtime_context().gcs_address
    with Client(url, token, timeout=600) as client:
        project = new_project(client, "spark-bench", 1, args.rows)
        server = deployed(client, project)
        bulk = timed_job(client, project)[0]["rate"]
        runs = {}
        for spark in (True, False):
            for rows, path in inputs.items():
                runs[spark, rows] = measured(
                    path, project, address, spark, work / f"out-{spark}-{rows}"
                )
        client.delete_server(server)
    ray.shutdown()

    mib = 2**20
    print(f"rows: {args.rows:,} (news example), 2 CPUs, one replica of 0.5 CPU")
    print(f"bulk job of the store:               {bulk:7.1f} tasks/s")
    for spark, label in (
        (True, "preannotate(df) through RayDP:      "),
        (False, "run_files (Ray only, no Spark):     "),
    ):
        run = runs[spark, args.rows]
        assert run["rows"] == args.rows and run["ok"] == args.rows, run
        rate = args.rows / run["seconds"]
        print(f"{label} {rate:7.1f} tasks/s ({rate / bulk:.2f} of the bulk job)")
    for spark, label in ((True, "with Spark"), (False, "without Spark")):
        small, large = runs[spark, args.small]["peak"], runs[spark, args.rows]["peak"]
        print(
            f"driver peak RSS {label}: {small / mib:7.1f} MiB for {args.small:,} rows, "
            f"{large / mib:7.1f} MiB for {args.rows:,} rows ({large / small:.2f}x)"
        )


if __name__ == "__main__":
    main()
