"""How HTTP requests reach the router and the servers: HAProxy in front of Serve, or Serve's
Python proxy.

Serve's default Python proxy costs about 15 ms per request on a 2-core machine, more
than the model takes for a sentence. With `haproxy` installed (the Makefile installs
Debian's package), a head this project starts runs Serve's HAProxy ingress instead:
HAProxy owns the API port and forwards to the router replica's own HTTP server (and a
server's predictions to the server's replicas, `server_ingress.py`). Serve's
`RAY_SERVE_THROUGHPUT_OPTIMIZED` (gRPC between replicas, user code on the replica's loop)
is left off: it took a further 2 ms off an interactive call but a fifth off bulk
throughput (`bench/bulk.py`). Serve reads these settings from the environment of
its processes when they start, so they must be in the environment of `ray start` (or of
the driver that starts a local Ray), not set later.

HAProxy's stats page and Prometheus endpoint listen on all interfaces (Serve's template
fixes that). Serve binds those, its fallback proxy and the replicas' own HTTP servers at
fixed defaults (8404, 9101, 8500, 30000-31000) with SO_REUSEPORT, so two clusters on one
machine (a test cluster next to a user's) would share them, and one cluster's HAProxy
would send requests to the other cluster's replicas. Each installation gets its own free
ports instead.
"""

import shutil

from preannotate.cluster.local_head import ClusterError, free_port_block

HAPROXY = "haproxy"
PYTHON = "python"
INGRESSES = (HAPROXY, PYTHON)
DRAIN_S = 0.5
REPLICA_PORTS = 200
"""Ports for replicas' own HTTP (and gRPC) servers: one per ingress replica on a node."""
HTTP_PORTS = (20_000, 26_000)
GRPC_PORTS = (26_000, 32_000)
"""Where the replicas' port blocks are looked for: above Ray's worker ports (10002 to
19999) and below Linux's ephemeral ports (from 32768), which a busy node's outgoing
connections take by the thousand, so that a whole block is found free."""
LISTENER_PORTS = (32_000, 32_768)
"""Where HAProxy's stats and metrics ports and Serve's fallback proxy ports are looked
for, four together, below the ephemeral ports for the same reason: a port picked there
could be an outgoing connection's by the time HAProxy binds it."""


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
    http_ports = free_port_block(REPLICA_PORTS, *HTTP_PORTS)
    grpc_ports = free_port_block(REPLICA_PORTS, *GRPC_PORTS)
    listeners = free_port_block(4, *LISTENER_PORTS)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_ports),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_ports + REPLICA_PORTS - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_ports),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_ports + REPLICA_PORTS - 1),
        "RAY_SERVE_HAPROXY_BINARY_PATH": binary,
        "RAY_SERVE_HAPROXY_STATS_PORT": str(listeners),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(listeners + 1),
        # Serve's Python proxy, to which HAProxy falls back while an application has no
        # replica to take a request (the router restarting, a server scaled to zero).
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(listeners + 2),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(listeners + 3),
        # A stopping router replica waits this long for HAProxy to stop sending it requests
        # (Serve's default, 30 s, made every `down` and restart wait half a minute).
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(DRAIN_S),
    }
