"""What `preannotate up` checks before it starts anything.

It needs none of the cluster's code (Serve, the router, the scheduler), so a refusal comes
at once, without the seconds those take to import.
"""

from preannotate.cluster.local_head import (
    ClusterError,
    HeadPorts,
    LocalHead,
    ensure_free,
    recorded_head,
)
from preannotate.cluster.up_state import forget, remembered


def check_up(address: str | None, host: str, port: int, head_ports: HeadPorts) -> LocalHead | None:
    """Refuse (ClusterError) an `up` that cannot work: a cluster from this data directory
    already running (unless `address` asks to join it), or a port that is taken. Returns the
    head an earlier `up` here started, when it runs and is to be joined."""
    head = recorded_head()
    if head is not None and head.process() is None:
        head.stop()  # an earlier head that is gone (a crash, a reboot): only records are left
        forget()
        head = None
    if head is not None:
        if address is None:
            state = remembered()
            where = f"API at {state['url']}" if state else f"Ray head pid {head.pid}"
            raise ClusterError(
                f"a cluster is already running here: {where}; use it, or `preannotate down` "
                "first (`preannotate up --address auto` joins it)"
            )
        return head
    ensure_free(host, port, "the API's HTTP port", "--port")
    if address is None:
        head_ports.check(port)
    return None
