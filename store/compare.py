"""What changed between two predictions of a task.

Items are matched by where they are, not by their `id` (ids are generated per run):
spans by (from_name, start, end), boxes by (from_name, page, x, y, width, height),
choices by from_name, relations by the positions of the two regions they join (falling
back to their raw from_id/to_id when a region is not in the result). A matched pair is
"changed" when its labels differ.

One region may carry several items (an entity label and an assertion label on the same
span): items with equal labels pair off first as unchanged, the rest pair in order as
changed, and what is left over is added or removed.
"""

from typing import Any

Key = tuple[Any, ...]
Item = dict[str, Any]


def compare_results(a: list[Item], b: list[Item]) -> dict[str, Any]:
    """`{"added": [b items], "removed": [a items], "changed": [{"a", "b"}], "unchanged": n}`."""
    groups_a, groups_b = _group(a), _group(b)
    added: list[Item] = []
    removed: list[Item] = []
    changed: list[dict[str, Item]] = []
    unchanged = 0
    for key in dict.fromkeys([*groups_a, *groups_b]):
        left, right = groups_a.get(key, []), groups_b.get(key, [])
        unmatched_right = list(right)
        unmatched_left = []
        for item in left:
            labels = _labels(item)
            match = next((i for i, o in enumerate(unmatched_right) if _labels(o) == labels), None)
            if match is None:
                unmatched_left.append(item)
            else:
                unmatched_right.pop(match)
                unchanged += 1
        changed += [{"a": x, "b": y} for x, y in zip(unmatched_left, unmatched_right, strict=False)]
        removed += unmatched_left[len(unmatched_right) :]
        added += unmatched_right[len(unmatched_left) :]
    return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged}


def _group(result: list[Item]) -> dict[Key, list[Item]]:
    regions = {item["id"]: _region_key(item) for item in result if "id" in item}
    groups: dict[Key, list[Item]] = {}
    for item in result:
        if item.get("type") == "relation":
            ends = (item.get("from_id"), item.get("to_id"))
            key: Key = ("relation", *(regions.get(end, end) for end in ends))
        else:
            key = _region_key(item)
        groups.setdefault(key, []).append(item)
    return groups


def _region_key(item: Item) -> Key:
    value = item.get("value", {})
    from_name = item.get("from_name")
    if "start" in value and "end" in value:
        return ("span", from_name, value["start"], value["end"])
    if "x" in value and "y" in value:
        size = (value.get("width"), value.get("height"))
        return ("box", from_name, value.get("page", 0), value["x"], value["y"], *size)
    return (item.get("type"), from_name)


def _labels(item: Item) -> Any:
    """The part a reviewer edits: `labels` of a relation, else the value under its type."""
    if item.get("type") == "relation":
        return sorted(item.get("labels", []))
    value = item.get("value", {})
    labelled = value.get(item.get("type"))
    return sorted(labelled) if isinstance(labelled, list) else value
