"""Evaluate template.yaml's values the way CloudFormation would, against local resources.

Parameters take their defaults (or a local override), pseudo parameters describe the
local account and region, conditions are evaluated, and Ref / Fn::GetAtt / Fn::Sub of a
resource ask `resource_lookup` for that resource's physical id and attributes, so the
resource can be created on first use, after the ones it depends on.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class TemplateError(ValueError):
    """The template asks for something the local stack cannot evaluate."""


@dataclass(frozen=True)
class PhysicalResource:
    """What a Ref and a Fn::GetAtt of one resource return."""

    ref: str
    attributes: Mapping[str, str] = field(default_factory=dict)


ResourceLookup = Callable[[str], PhysicalResource]

# Fn::Sub placeholders: ${Name}, ${Name.Attribute}; ${!Literal} stays a literal ${Literal}.
_SUB_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
# The template's way of saying "leave this property out".
_NO_VALUE = object()


class TemplateEvaluator:
    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        stack_name: str,
        region: str,
        account_id: str,
        resource_lookup: ResourceLookup,
        parameter_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.template = template
        self._resource_lookup = resource_lookup
        self._pseudo: dict[str, Any] = {
            "AWS::AccountId": account_id,
            "AWS::Region": region,
            "AWS::StackName": stack_name,
            # A stack id ends in a UUID (templates name things after it).
            "AWS::StackId": (
                f"arn:aws:cloudformation:{region}:{account_id}:stack/{stack_name}/{uuid.uuid4()}"
            ),
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
        }
        self.parameters = self._parameter_values(parameter_overrides or {})
        self._conditions: dict[str, bool] = {}

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        resources: Mapping[str, Mapping[str, Any]] = self.template.get("Resources", {})
        return resources

    def resource_type(self, logical_id: str) -> str:
        try:
            return str(self.resources[logical_id]["Type"])
        except KeyError:
            raise TemplateError(f"no resource {logical_id!r} in the template") from None

    def logical_ids_of_type(self, resource_type: str) -> list[str]:
        return [
            logical_id
            for logical_id, resource in self.resources.items()
            if resource.get("Type") == resource_type and self.condition_holds(resource.get("Condition"))
        ]

    def properties(self, logical_id: str) -> dict[str, Any]:
        """A resource's Properties with every intrinsic function evaluated."""
        resolved = self.resolve(self.resources[logical_id].get("Properties", {}))
        return dict(resolved) if isinstance(resolved, Mapping) else {}

    def condition_holds(self, name: str | None) -> bool:
        if name is None:
            return True
        if name not in self._conditions:
            conditions = self.template.get("Conditions", {})
            if name not in conditions:
                raise TemplateError(f"no condition {name!r} in the template")
            self._conditions[name] = bool(self.resolve(conditions[name]))
        return self._conditions[name]

    def _parameter_values(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        declared: Mapping[str, Mapping[str, Any]] = self.template.get("Parameters", {})
        unknown = set(overrides) - set(declared)
        if unknown:
            raise TemplateError(f"overrides for undeclared parameters: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, declaration in declared.items():
            raw = overrides.get(name, declaration.get("Default"))
            if raw is None:
                continue  # Referencing it fails with a clear error; not referencing it is fine.
            kind = str(declaration.get("Type", "String"))
            if kind == "CommaDelimitedList" or kind.startswith("List<"):
                values[name] = raw if isinstance(raw, list) else str(raw).split(",")
            else:
                values[name] = str(raw)
        return values

    def resolve(self, node: Any) -> Any:
        """`node` with every intrinsic function replaced by its value."""
        value = self._resolve(node)
        return None if value is _NO_VALUE else value

    def _resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self._resolve(item) for item in node]
            return [item for item in items if item is not _NO_VALUE]
        if not isinstance(node, Mapping):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            function = _INTRINSICS.get(key)
            if function is not None:
                return function(self, argument)
        resolved = {key: self._resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not _NO_VALUE}

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self._pseudo:
            return self._pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.template.get("Parameters", {}):
            raise TemplateError(f"parameter {name!r} has no Default: pass a parameter override")
        return self._resource_lookup(name).ref

    def get_att(self, logical_id: str, attribute: str) -> str:
        physical = self._resource_lookup(logical_id)
        if attribute not in physical.attributes:
            raise TemplateError(
                f"the local stack has no attribute {attribute!r} for {logical_id!r} "
                f"(it knows {sorted(physical.attributes)})"
            )
        return physical.attributes[attribute]

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], self._resolve(argument[1])
        else:
            text, variables = argument, {}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return self.get_att(logical_id, attribute)
            return str(self.ref(name))

        return _SUB_PLACEHOLDER.sub(replace, str(text))


def _fn_ref(evaluator: TemplateEvaluator, argument: Any) -> Any:
    return evaluator.ref(str(evaluator.resolve(argument)))


def _fn_get_att(evaluator: TemplateEvaluator, argument: Any) -> str:
    if isinstance(argument, str):
        logical_id, attribute = argument.split(".", 1)
    else:
        logical_id, attribute = (str(part) for part in evaluator.resolve(argument))
    return evaluator.get_att(logical_id, attribute)


def _fn_join(evaluator: TemplateEvaluator, argument: Any) -> str:
    delimiter, items = argument
    return str(delimiter).join(str(item) for item in evaluator.resolve(items))


def _fn_select(evaluator: TemplateEvaluator, argument: Any) -> Any:
    index, items = evaluator.resolve(argument)
    return items[int(index)]


def _fn_split(evaluator: TemplateEvaluator, argument: Any) -> list[str]:
    delimiter, text = argument
    return str(evaluator.resolve(text)).split(str(delimiter))


def _fn_if(evaluator: TemplateEvaluator, argument: Any) -> Any:
    name, when_true, when_false = argument
    chosen = when_true if evaluator.condition_holds(str(name)) else when_false
    return evaluator._resolve(chosen)


def _fn_equals(evaluator: TemplateEvaluator, argument: Any) -> bool:
    left, right = evaluator.resolve(argument)
    return str(left) == str(right)


def _fn_not(evaluator: TemplateEvaluator, argument: Any) -> bool:
    return not evaluator.resolve(argument)[0]


def _fn_and(evaluator: TemplateEvaluator, argument: Any) -> bool:
    return all(evaluator.resolve(argument))


def _fn_or(evaluator: TemplateEvaluator, argument: Any) -> bool:
    return any(evaluator.resolve(argument))


def _fn_condition(evaluator: TemplateEvaluator, argument: Any) -> bool:
    return evaluator.condition_holds(str(argument))


def _fn_find_in_map(evaluator: TemplateEvaluator, argument: Any) -> Any:
    map_name, top_key, second_key = (str(part) for part in evaluator.resolve(argument))
    try:
        return evaluator.template["Mappings"][map_name][top_key][second_key]
    except KeyError:
        raise TemplateError(f"Fn::FindInMap: no {map_name}.{top_key}.{second_key}") from None


def _fn_base64(evaluator: TemplateEvaluator, argument: Any) -> str:
    return base64.b64encode(str(evaluator.resolve(argument)).encode()).decode()


def _fn_get_azs(evaluator: TemplateEvaluator, argument: Any) -> list[str]:
    region = str(evaluator.resolve(argument) or evaluator.ref("AWS::Region"))
    return [f"{region}{zone}" for zone in "abc"]


def _fn_to_json_string(evaluator: TemplateEvaluator, argument: Any) -> str:
    return json.dumps(evaluator.resolve(argument), separators=(",", ":"))


def _fn_sub(evaluator: TemplateEvaluator, argument: Any) -> str:
    return evaluator._sub(argument)


_INTRINSICS: dict[str, Callable[[TemplateEvaluator, Any], Any]] = {
    "Ref": _fn_ref,
    "Fn::GetAtt": _fn_get_att,
    "Fn::Sub": _fn_sub,
    "Fn::Join": _fn_join,
    "Fn::Select": _fn_select,
    "Fn::Split": _fn_split,
    "Fn::If": _fn_if,
    "Fn::Equals": _fn_equals,
    "Fn::Not": _fn_not,
    "Fn::And": _fn_and,
    "Fn::Or": _fn_or,
    "Condition": _fn_condition,
    "Fn::FindInMap": _fn_find_in_map,
    "Fn::Base64": _fn_base64,
    "Fn::GetAZs": _fn_get_azs,
    "Fn::ToJsonString": _fn_to_json_string,
}
