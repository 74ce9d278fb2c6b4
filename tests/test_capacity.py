"""Capacity checks: a deploy that cannot fit fails at once with a message that says why."""

import importlib.util
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from preannotate.cluster.capacity import (
    FitResult,
    NodeResources,
    ResourceRequest,
    ServerHolding,
    check_fit,
    shows_free,
)
from preannotate.scheduler.controller import _no_room

GIB = 1024**3
ROOT = Path(__file__).resolve().parent.parent


def node(node_id: str, total: dict[str, float], available: dict[str, float] | None = None):
    """A node as Ray reports it; available defaults to all of it free."""
    return NodeResources(
        node_id=node_id, total=total, available=dict(total) if available is None else available
    )


def two_cpu_nodes(**available: dict[str, float]) -> list[NodeResources]:
    return [node(name, {"CPU": 2}, available.get(name)) for name in ("a", "b")]


# --- fits ---------------------------------------------------------------------------------


def test_three_one_cpu_replicas_spread_over_two_nodes() -> None:
    result = check_fit(ResourceRequest(num_cpus=1, replicas=3), two_cpu_nodes())

    assert result.fits
    assert sorted(result.placement) == ["a", "a", "b"]
    assert result.message == "Fits: 3 replicas on a, b, a."


def test_fractional_cpus_fit_exactly() -> None:
    result = check_fit(ResourceRequest(num_cpus=0.5, replicas=4), [node("a", {"CPU": 2})])

    assert result.fits
    assert result.placement == ["a"] * 4


def test_float_sums_do_not_lose_a_replica() -> None:
    free = {"CPU": 0.1 + 0.2}  # 0.30000000000000004
    result = check_fit(ResourceRequest(num_cpus=0.1, replicas=3), [node("a", {"CPU": 2}, free)])

    assert result.fits


def test_fractional_cpus_one_replica_too_many() -> None:
    result = check_fit(ResourceRequest(num_cpus=0.5, replicas=5), [node("a", {"CPU": 2})])

    assert not result.fits
    assert result.never_fits
    assert result.missing == [
        "CPU: need 0.5 per replica for 5 replicas, the cluster has room for 4"
    ]


def test_zero_request_fits_any_node() -> None:
    result = check_fit(ResourceRequest(replicas=2), [node("a", {"CPU": 2}, {})])

    assert result.fits
    assert result.placement == ["a", "a"]


def test_licensed_replica_goes_to_the_node_with_the_token() -> None:
    nodes = [node("cpu", {"CPU": 8}), node("lic", {"CPU": 2, "license_token": 1})]

    result = check_fit(ResourceRequest(num_cpus=1, license_tokens=1), nodes)

    assert result.placement == ["lic"]


# --- never fits: deleting servers will not help ---------------------------------------


def test_gpu_request_on_a_cpu_only_cluster_never_fits() -> None:
    result = check_fit(ResourceRequest(num_cpus=1, num_gpus=1), two_cpu_nodes())

    assert result.never_fits
    assert result.delete_candidates == []
    assert result.missing == ["GPU: need 1 per replica, no node has any"]
    assert result.message.startswith(
        "Cannot deploy: it asks for 1 GPU per replica but no node in the cluster has any GPU."
    )
    assert "Deleting servers will not help" in result.message


def test_four_cpus_on_two_cpu_nodes_never_fits() -> None:
    holdings = [ServerHolding(server_id="server-1", resources={"CPU": 2})]

    result = check_fit(ResourceRequest(num_cpus=4), two_cpu_nodes(a={}), holdings)

    assert result.never_fits
    assert result.delete_candidates == []
    assert result.missing == ["CPU: need 4 per replica, the largest node has 2"]
    assert "server-1" not in result.message


def test_five_one_cpu_replicas_on_two_two_cpu_nodes_never_fit() -> None:
    result = check_fit(ResourceRequest(num_cpus=1, replicas=5), two_cpu_nodes())

    assert result.never_fits
    assert "its 5 replicas need 1 CPU each but the cluster's nodes have room for only 4" in (
        result.message
    )


def test_memory_is_shown_in_gib() -> None:
    result = check_fit(ResourceRequest(memory_bytes=4 * GIB), [node("a", {"memory": 2 * GIB})])

    assert result.missing == ["memory: need 4 GiB per replica, the largest node has 2 GiB"]


def test_license_token_absent_everywhere_says_how_to_get_one() -> None:
    result = check_fit(ResourceRequest(license_tokens=1), two_cpu_nodes())

    assert result.never_fits
    assert "no node in the cluster has any license_token" in result.message
    assert "--license FILE" in result.message


def test_resources_spread_over_different_nodes_do_not_make_one_replica() -> None:
    nodes = [node("cpu", {"CPU": 4}), node("gpu", {"CPU": 1, "GPU": 1})]

    result = check_fit(ResourceRequest(num_cpus=2, num_gpus=1), nodes)

    assert result.never_fits
    assert result.missing == ["node: no node has 2 CPU and 1 GPU together"]


def test_no_nodes_at_all() -> None:
    result = check_fit(ResourceRequest(num_cpus=1), [])

    assert result.never_fits
    assert "the cluster has no nodes (is Ray running?)" in result.message


# --- does not fit now: which servers to delete --------------------------------------------


def test_fully_used_key_disappears_and_counts_as_zero() -> None:
    """Ray drops license_token from `available` when the last token is taken."""
    nodes = [node("a", {"CPU": 4, "license_token": 1}, {"CPU": 3})]
    holdings = [ServerHolding(server_id="server-3", resources={"CPU": 1, "license_token": 1})]

    result = check_fit(ResourceRequest(num_cpus=1, license_tokens=1), nodes, holdings)

    assert not result.fits
    assert not result.never_fits
    assert result.missing == ["license_token: need 1 per replica, 0 free (held by server-3)"]


def test_delete_candidate_is_the_server_holding_the_only_token() -> None:
    nodes = [node("a", {"CPU": 4, "license_token": 1}, {"CPU": 1})]
    holdings = [
        ServerHolding(server_id="server-1", resources={"CPU": 1, "license_token": 1}),
        ServerHolding(server_id="server-2", resources={"CPU": 2}),
    ]

    result = check_fit(ResourceRequest(num_cpus=0.5, license_tokens=1), nodes, holdings)

    assert result.delete_candidates == ["server-1"]
    assert not result.delete_together
    assert result.message == (
        "Cannot deploy: no node has a free license_token (need 1 per replica; held by server-1). "
        "Delete one of these servers on the Clusters page to free it: server-1."
    )


def test_per_node_holdings_pick_the_server_on_the_right_node() -> None:
    nodes = [
        node("a", {"CPU": 2, "license_token": 1}, {}),
        node("b", {"CPU": 2, "license_token": 1}, {"license_token": 1}),
    ]
    holdings = [
        ServerHolding(
            server_id="server-1",
            resources={"CPU": 2, "license_token": 1},
            per_node={"a": {"CPU": 2, "license_token": 1}},
        ),
        ServerHolding(server_id="server-2", resources={"CPU": 2}, per_node={"b": {"CPU": 2}}),
    ]

    result = check_fit(ResourceRequest(num_cpus=2, license_tokens=1), nodes, holdings)

    assert result.delete_candidates == ["server-1", "server-2"]
    assert not result.delete_together
    assert "Delete one of these servers" in result.message


def test_freeing_the_wrong_node_does_not_help() -> None:
    """server-2's CPU is on node b, which has no GPU: deleting it cannot help a GPU replica."""
    nodes = [
        node("a", {"CPU": 2, "GPU": 1}, {"GPU": 1}),
        node("b", {"CPU": 2}, {}),
    ]
    holdings = [
        ServerHolding(server_id="server-1", resources={"CPU": 2}, per_node={"a": {"CPU": 2}}),
        ServerHolding(server_id="server-2", resources={"CPU": 2}, per_node={"b": {"CPU": 2}}),
    ]

    result = check_fit(ResourceRequest(num_cpus=1, num_gpus=1), nodes, holdings)

    assert result.delete_candidates == ["server-1"]


def test_two_servers_must_go_together() -> None:
    nodes = [node("a", {"CPU": 4, "license_token": 2}, {"CPU": 4})]
    holdings = [
        ServerHolding(server_id="server-1", resources={"license_token": 1}),
        ServerHolding(server_id="server-2", resources={"license_token": 1}),
        ServerHolding(server_id="server-3", resources={"CPU": 0}),
    ]

    result = check_fit(ResourceRequest(license_tokens=2), nodes, holdings)

    assert result.delete_candidates == ["server-1", "server-2"]
    assert result.delete_together
    assert result.message.endswith(
        "Delete all of these servers on the Clusters page to free it: server-1, server-2."
    )


def test_more_replicas_than_the_free_room() -> None:
    holdings = [
        ServerHolding(server_id="server-1", resources={"CPU": 2}, per_node={"a": {"CPU": 2}})
    ]

    result = check_fit(ResourceRequest(num_cpus=1, replicas=3), two_cpu_nodes(a={}), holdings)

    assert not result.never_fits
    assert result.missing == [
        "CPU: need 1 per replica for 3 replicas, free room for 2 (held by server-1)"
    ]
    assert result.delete_candidates == ["server-1"]


def test_busy_cluster_without_servers_to_delete() -> None:
    """Resources held by jobs, not servers: say so rather than suggest nothing silently."""
    result = check_fit(ResourceRequest(num_cpus=1), two_cpu_nodes(a={"CPU": 0.5}, b={}))

    assert result.delete_candidates == []
    assert result.message == (
        "Cannot deploy: no node has 1 CPU free (at most 0.5 on one node). "
        "No deployed server holds enough of it; wait for running jobs to finish or add nodes."
    )


def test_result_serializes_with_its_message() -> None:
    """The router returns the result as JSON, message and missing included."""
    result = check_fit(ResourceRequest(num_gpus=1), two_cpu_nodes())

    dumped = json.loads(result.model_dump_json())

    assert dumped["missing"] == ["GPU: need 1 per replica, no node has any"]
    assert dumped["message"] == result.message
    assert FitResult.model_validate(dumped).message == result.message


@pytest.mark.parametrize("field, value", [("num_cpus", -1), ("replicas", 0), ("memory_bytes", -1)])
def test_request_rejects_impossible_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ResourceRequest(**{field: value})


# --- ray-cluster.yaml --------------------------------------------------------------------


def launcher_config() -> dict:
    return yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())


def test_ray_cluster_yaml_matches_launcher_schema() -> None:
    """Validate against the schema of the installed ray, without importing ray."""
    ray_dir = Path(importlib.util.find_spec("ray").origin).parent
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())

    jsonschema.validate(launcher_config(), schema)


def test_ray_cluster_yaml_declares_license_tokens_on_workers_only() -> None:
    config = launcher_config()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]

    assert config["cluster_name"] == "preannotate"
    assert head["resources"]["CPU"] > 0
    assert "license_token" not in head["resources"]
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    for name in ("cpu_worker", "gpu_worker"):
        assert types[name]["resources"]["license_token"] >= 1
        assert types[name]["min_workers"] <= types[name]["max_workers"]
    assert config["max_workers"] == sum(
        types[name]["max_workers"] for name in types if name != config["head_node_type"]
    )


def test_a_delete_waits_until_each_node_shows_what_the_server_held_there_freed() -> None:
    held = {"a": {"CPU": 1, "license_token": 1}, "b": {"CPU": 0.5}}
    while_held = [
        node("a", {"CPU": 2, "license_token": 1}, {"CPU": 1}),  # Ray omits a used-up key
        node("b", {"CPU": 2}, {"CPU": 1}),  # other work holds 0.5 there too
    ]
    assert not shows_free(while_held, held, while_held)
    # b has room for the held 0.5 all along, but its free CPU has not risen yet
    lagging = [node("a", {"CPU": 2, "license_token": 1}), node("b", {"CPU": 2}, {"CPU": 1})]
    assert not shows_free(lagging, held, while_held)
    freed = [node("a", {"CPU": 2, "license_token": 1}), node("b", {"CPU": 2}, {"CPU": 1.5})]
    assert shows_free(freed, held, while_held)
    shrunk = [node("a", {"CPU": 1.5, "license_token": 1}), node("b", {"CPU": 1.5})]
    assert shows_free(shrunk, held, while_held)  # up to the node's total
    assert shows_free([], held, while_held)  # the nodes left the cluster


def test_a_server_not_restored_for_lack_of_room_names_no_other_server() -> None:
    """Its message stays on the server, shown to members who may not see the others."""
    nodes = [node("a", {"CPU": 4, "license_token": 1}, {"CPU": 1})]
    holdings = [ServerHolding(server_id="server-1", resources={"CPU": 1, "license_token": 1})]
    fit = check_fit(ResourceRequest(num_cpus=2, license_tokens=1), nodes, holdings)
    assert "server-1" in fit.message
    assert _no_room(fit) == (
        "not enough free CPU, license_token in the cluster for it now; deploy the project "
        "again once there is room"
    )
