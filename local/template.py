"""Read template.yaml into plain data, with CloudFormation's short tags in their long form.

`!Ref X` becomes `{"Ref": "X"}`, `!GetAtt A.B` becomes `{"Fn::GetAtt": ["A", "B"]}`,
`!Condition C` becomes `{"Condition": "C"}`, and every other `!Tag value` becomes
`{"Fn::Tag": value}`, which is how the JSON form of a template spells them. Scalars that
YAML would read as dates stay strings, as CloudFormation reads them
(`Version: 2012-10-17`).
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import yaml

# Short tags CloudFormation and SAM accept, and the long form of each.
_LONG_FORMS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "And",
            "Base64",
            "Cidr",
            "Equals",
            "FindInMap",
            "GetAtt",
            "GetAZs",
            "If",
            "ImportValue",
            "Join",
            "Length",
            "Not",
            "Or",
            "Select",
            "Split",
            "Sub",
            "ToJsonString",
            "Transform",
        )
    },
}


class TemplateLoader(yaml.SafeLoader):
    """A safe YAML loader that knows CloudFormation's short tags and no dates."""


# Without the timestamp resolver, `2012-10-17` stays the string CloudFormation sees.
TemplateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_intrinsic(loader: TemplateLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    long_form = _LONG_FORMS.get(tag_suffix)
    if long_form is None:
        raise yaml.constructor.ConstructorError(
            None, None, f"unknown CloudFormation tag !{tag_suffix}", node.start_mark
        )
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {long_form: value}


TemplateLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: str | PathLike[str]) -> dict[str, Any]:
    """The template at `path` as a dict, intrinsic functions in their long (JSON) form."""
    with open(path, encoding="utf-8") as stream:
        template = yaml.load(stream, Loader=TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(template, dict):
        raise ValueError(f"{path} is not a CloudFormation template (no top-level mapping)")
    return template
