"""How HTTP requests reach the router: HAProxy in front of Serve, or Serve's Python proxy.

Serve's default Python proxy costs about 15 ms per request on a 2-core machine, more
than the model takes for a sentence. With `haproxy` installed (the Makefile installs
Debian's package), a head this project starts runs Serve's HAProxy ingress instead:
HAProxy owns the API port and forwards to the router replica's own HTTP server. Serve's
`RAY_SERVE_THROUGHPUT_OPTIMIZED` (gRPC between replicas, user code on the replica's loop)
is left off: it took a further 2 ms off an interactive call but a fifth off bulk
throughput (`bench/bulk.py`). Serve reads these settings from the environment of
its processes when they start, so they must be in the environment of `ray start` (or of
the driver that starts a local Ray), not set later.

HAProxy's stats page and Prometheus endpoint listen on all interfaces (Serve's template
fixes that); each installation gets free ports for them so that two clusters on one
machine (a test cluster next to a user's) never collide.
"""

import shutil

from preannotate.cluster.local_head import ClusterError, free_port

HAPROXY = "haproxy"
PYTHON = "python"
INGRESSES = (HAPROXY, PYTHON)
DRAIN_S = 2


def default_ingress() -> str:
    """HAProxy where its binary is installed, else Serve's Python proxy."""
    return HAPROXY if shutil.which("haproxy") else PYTHON


def ingress_env(ingress: str) -> dict[str, str]:
    """The environment Ray's processes need for `ingress`; empty for the Python proxy."""
    if ingress == PYTHON:
        return {}
    if ingress != HAPROXY:
        raise ClusterError(f"unknown ingress {ingress!r}; choose one of {', '.join(INGRESSES)}")
    binary = shutil.which("haproxy")
    if binary is None:
        raise ClusterError(
            "the haproxy ingress needs the `haproxy` binary (Debian: apt-get install haproxy);"
            " or choose --ingress python"
        )
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": binary,
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        # A stopping router replica waits this long for HAProxy to stop sending it requests
        # (Serve's default, 30 s, made every `down` and restart wait half a minute).
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAIN_S),
    }
