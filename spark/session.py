"""Spark on Ray: one RayDP session per driver, with what Java 17 needs set for the user.

RayDP starts Spark's executors and its own application master as Ray actors. On Java 17
Spark and Ray's Java serializer reflect into JDK internals, so the driver, the executors and
the app master all need `--add-opens` flags; without `java.math`, the app master dies the
first time it serializes an answer (`ray.data.from_spark` fails with "actor died").
"""

import os
import sys
import threading
from typing import TYPE_CHECKING

from preannotate.annotators.jvm import JAVA_17_OPTIONS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_lock = threading.Lock()


def java_options_configs() -> dict[str, str]:
    """The Spark settings that hand the Java 17 options to every JVM RayDP starts, and the
    driver's JVM the Ray session's log folder: RayDP's agent in it writes there, and
    without the setting it uses `/tmp/ray/session_latest/logs`, which fails ("Error create
    log dir") where that link points to a session since cleaned away."""
    return {
        "spark.driver.extraJavaOptions": JAVA_17_OPTIONS + _driver_log_dir(),
        "spark.executor.extraJavaOptions": JAVA_17_OPTIONS,
        "spark.ray.raydp_app_master.extraJavaOptions": JAVA_17_OPTIONS,
    }


def _driver_log_dir() -> str:
    """` -Dray.logging.dir=<this Ray session's logs>` for a driver on a Ray node (as RayDP
    gives its application master); nothing for one that has no node here (`ray://`)."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return f' "-Dray.logging.dir={node.get_logs_dir_path()}"' if node is not None else ""


def spark_session(
    app_name: str = "preannotate",
    executors: int = 1,
    executor_cores: int = 1,
    executor_memory: str = "1G",
    configs: dict[str, str] | None = None,
) -> "SparkSession":
    """The driver's RayDP session on the Ray cluster this process is connected to (started
    once; later calls return it). `configs` adds Spark settings, e.g. a Hive metastore."""
    import raydp
    from pyspark.sql import SparkSession

    with _lock:
        active = SparkSession.getActiveSession()
        if active is not None and is_raydp(active):
            return active
        connected()  # before the options: the driver's log folder is the session's
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        return raydp.init_spark(
            app_name,
            num_executors=executors,
            executor_cores=executor_cores,
            executor_memory=executor_memory,
            configs=with_ours(java_options_configs(), configs or {}),
        )


def with_ours(ours: dict[str, str], theirs: dict[str, str]) -> dict[str, str]:
    """The user's Spark settings over ours, except JVM options, which add to ours: a
    user's `spark.driver.extraJavaOptions` must not drop the Java 17 flags."""
    return ours | {
        key: f"{ours[key]} {value}" if key in ours else value for key, value in theirs.items()
    }


def connected() -> None:
    """Join the cluster `preannotate up` remembered here (else a local one, "auto"), in our
    namespace, unless this process is connected already: then `connect` would return at
    once too, but reading `up`'s remembered file is skipped as well."""
    import ray

    from preannotate.cluster.ray_cluster import connect
    from preannotate.cluster.up_state import remembered

    if not ray.is_initialized():
        state = remembered()
        connect(state["address"] if state else "auto")


def is_raydp(spark: "SparkSession") -> bool:
    """Whether the session runs its executors on Ray (so they write partitions where the
    Ray workers read them, and the driver never holds them)."""
    return spark.sparkContext.master.startswith("ray")


def stop_spark() -> None:
    """Stop the RayDP session and its executor actors, if one runs."""
    import raydp

    with _lock:
        raydp.stop_spark()
