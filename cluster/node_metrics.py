"""Read back what Ray's metrics agents export, one Prometheus endpoint per node.

Metrics recorded with `ray.util.metrics` in any process (a model server replica, the
scheduler) reach the metrics agent of their node, which serves them, with Ray's and
Serve's own, in the Prometheus text format at `http://<node>:<MetricsExportPort>/metrics`
(the port Ray writes to its Prometheus service-discovery file). A node's page is large
(hundreds of kB of Ray's own metrics), so only the lines of the asked-for families are
parsed. A node that does not answer is counted, not fatal: the page shows the rest.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import ray
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT_S = 2.0
"""Per node; Ray's agents answer a scrape in milliseconds, a node that does not is down."""


@dataclass
class NodeMetrics:
    families: list[Metric] = field(default_factory=list)
    nodes_read: int = 0
    nodes_unreachable: int = 0


def exporter_urls() -> list[str]:
    """The metrics page of every live node whose agent exports metrics."""
    return [
        f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        for node in ray.nodes()
        if node.get("Alive") and node.get("MetricsExportPort", 0) > 0
    ]


def _lines_of(text: str, prefix: str) -> Iterator[str]:
    """The sample, `# HELP` and `# TYPE` lines of the families named `prefix...`."""
    for line in text.splitlines():
        described = line.startswith(("# HELP ", "# TYPE "))
        if (line[7:] if described else line).startswith(prefix):
            yield line


def _fetch(http: httpx.Client, url: str, prefix: str) -> str | None:
    """The node's lines of the `prefix` families, or None when its agent did not answer."""
    try:
        page = http.get(url)
        page.raise_for_status()
    except httpx.HTTPError:
        return None
    return "".join(line + "\n" for line in _lines_of(page.text, prefix))


def read_node_metrics(prefix: str) -> NodeMetrics:
    """The families whose names start with `prefix` (e.g. `ray_preannotate_`), from every
    node, as parsed; the same family appears once per node that has it. The nodes are read
    at once: an agent takes 50 to 200 ms to render its page. Blocks."""
    found = NodeMetrics()
    urls = exporter_urls()
    if not urls:
        return found
    with httpx.Client(timeout=TIMEOUT_S) as http, ThreadPoolExecutor(min(16, len(urls))) as pool:
        pages = list(pool.map(lambda url: _fetch(http, url, prefix), urls))
    for page in pages:
        if page is None:
            found.nodes_unreachable += 1
            continue
        found.nodes_read += 1
        found.families += text_string_to_metric_families(page)
    return found
