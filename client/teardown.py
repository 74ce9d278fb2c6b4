"""`preannotate down`: undo what `up` did here, and say what that was.

A head that `up` started is stopped as processes, with everything on it; that needs no
Serve, router or store code, so the command answers in a second or two rather than
after the five seconds their imports take. Only a cluster `up` joined needs them, to
remove the API from it (`launch.leave_cluster`).
"""

from preannotate.cluster.local_head import recorded_head
from preannotate.cluster.up_state import forget, remembered


def shutdown() -> str | None:
    """What `down` stopped, or None when `up` has not run here.

    A head that `up` started is stopped with everything on it (the API, servers, jobs'
    actors) and nothing else: other Ray clusters on this machine keep running. On a cluster
    it only joined, it removes the API and servers and leaves the cluster up."""
    state = remembered()
    head = recorded_head()
    if head is not None:
        from preannotate.cluster.ray_cluster import stop_head  # imports Ray, not Serve

        stopped = stop_head(head)
        forget()
        if not stopped:
            return f"the Ray head that `preannotate up` started here (pid {head.pid}) had stopped"
        where = state["address"] if state else head.address
        return (
            f"stopped the API, its servers and the Ray head at {where} that `preannotate up` "
            f"started ({stopped} processes)"
        )
    if state is None:
        return None
    from preannotate.client.launch import leave_cluster

    leave_cluster(state["address"])
    forget()
    return (
        f"stopped the API and its servers; the Ray cluster at {state['address']} keeps running "
        "(`preannotate up` joined it)"
    )
