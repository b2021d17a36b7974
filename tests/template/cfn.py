"""Small readers of a loaded template: SAM Globals, IAM statements, references, cycles."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

FUNCTIONS = ("SubmitFunction", "CallbackFunction", "ReconcileFunction", "AuditFunction")
# The functions that call a provider, with its route's secrets.
SECRET_READERS = ("SubmitFunction", "CallbackFunction", "ReconcileFunction")

# ${Name} or ${Name.Attribute} in a Fn::Sub string; ${!Literal} is no reference.
_SUB_REFERENCE = re.compile(r"\$\{([^!}][^}.]*)(?:\.[^}]*)?\}")


def canonical(value: Any) -> str:
    """One string per value, so long-form intrinsics compare and hash."""
    return json.dumps(value, sort_keys=True)


def merge_globals(global_value: Any, local_value: Any) -> Any:
    """SAM's Globals rule: maps merge, lists add up, anything else the resource wins."""
    if isinstance(global_value, dict) and isinstance(local_value, dict):
        merged = dict(global_value)
        for key, value in local_value.items():
            merged[key] = merge_globals(merged[key], value) if key in merged else value
        return merged
    if isinstance(global_value, list) and isinstance(local_value, list):
        return global_value + local_value
    return local_value


def function_properties(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's properties with the template's Globals.Function applied."""
    globals_ = template.get("Globals", {}).get("Function", {})
    merged: dict[str, Any] = merge_globals(globals_, template["Resources"][logical_id]["Properties"])
    return merged


def environment(template: Mapping[str, Any], logical_id: str) -> dict[str, Any]:
    variables: dict[str, Any] = function_properties(template, logical_id)["Environment"]["Variables"]
    return variables


def branches(node: Any) -> Iterator[Any]:
    """Every value a Fn::If may stand for (AWS::NoValue left out); other values as they are."""
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        _, when_true, when_false = node["Fn::If"]
        for branch in (when_true, when_false):
            if branch != {"Ref": "AWS::NoValue"}:
                yield from branches(branch)
    else:
        yield node


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements(template: Mapping[str, Any], logical_id: str) -> list[dict[str, Any]]:
    """The inline statements of a function's Policies, both sides of every Fn::If."""
    statements: list[dict[str, Any]] = []
    for policy in function_properties(template, logical_id).get("Policies", []):
        for document in branches(policy):
            for statement in as_list(document["Statement"]):
                statements.extend(branches(statement))
    return statements


def grants(template: Mapping[str, Any], logical_id: str) -> set[tuple[str, str]]:
    """(action, canonical resource) pairs a function's inline policies allow."""
    return {
        (action, canonical(resource))
        for statement in policy_statements(template, logical_id)
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    }


def references(node: Any, resource_ids: Collection[str]) -> set[str]:
    """Logical ids of the resources a value refers to by Ref, Fn::GetAtt or Fn::Sub."""
    found: set[str] = set()
    if isinstance(node, dict):
        if set(node) == {"Ref"} and isinstance(node["Ref"], str):
            found.add(node["Ref"])
        elif set(node) == {"Fn::GetAtt"}:
            target = node["Fn::GetAtt"]
            found.add(target.split(".", 1)[0] if isinstance(target, str) else target[0])
        elif set(node) == {"Fn::Sub"}:
            text, variables = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
            found.update(name for name in _SUB_REFERENCE.findall(text) if name not in variables)
        for value in node.values():
            found |= references(value, resource_ids)
    elif isinstance(node, list):
        for value in node:
            found |= references(value, resource_ids)
    return found & set(resource_ids)


def dependencies(resources: Mapping[str, Any]) -> dict[str, set[str]]:
    """What each resource needs created first: its references and its DependsOn."""
    graph: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        needs = references(resource.get("Properties", {}), resources)
        needs.update(as_list(resource.get("DependsOn", [])))
        graph[logical_id] = needs
    return graph


def find_cycle(resources: Mapping[str, Any]) -> list[str] | None:
    """One dependency cycle among the resources, as a path that ends where it starts."""
    graph = dependencies(resources)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for needed in sorted(graph.get(node, ())):
            cycle = visit(needed, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None
