"""Translate template.yaml into plain CloudFormation JSON, offline, as SAM would.

Runs in the tools venv (.venv-tools), which has aws-sam-translator:

    .venv-tools/bin/python tools/sam_translate.py template.yaml out/template.json

No AWS call is made: the region comes from the command line and the managed-policy map
is a stub (the template names no managed policies; SAM adds its own by full ARN).
Local code paths are replaced by placeholder S3 URIs, as `sam validate` does: the
translator accepts only S3 locations, which `sam package` would produce.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from boto3.session import Session
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator
from samtranslator.yaml_helper import yaml_parse

# Managed policy names the template may use by name -> ARN. Empty: a name would fail here,
# which is what we want until someone adds it on purpose.
MANAGED_POLICY_MAP: dict[str, str] = {}

# Resource type -> the property that names local code.
CODE_LOCATIONS = {
    "AWS::Serverless::Function": "CodeUri",
    "AWS::Serverless::LayerVersion": "ContentUri",
}
PLACEHOLDER_BUCKET = "sam-translate-placeholder"


def point_code_at_s3(sam_template: dict[str, Any]) -> None:
    """Replace every local CodeUri/ContentUri by an S3 URI under a placeholder bucket."""
    for resource in sam_template.get("Resources", {}).values():
        prop = CODE_LOCATIONS.get(resource.get("Type", ""))
        properties = resource.get("Properties", {})
        location = properties.get(prop) if prop else None
        if isinstance(location, str) and not location.startswith("s3://"):
            properties[prop] = f"s3://{PLACEHOLDER_BUCKET}/{location.strip('/')}.zip"


def translate(template_path: Path, region: str) -> dict[str, Any]:
    sam_template: dict[str, Any] = yaml_parse(template_path.read_text(encoding="utf-8"))
    point_code_at_s3(sam_template)
    translator = Translator(
        managed_policy_map=MANAGED_POLICY_MAP,
        sam_parser=Parser(),
        boto_session=Session(region_name=region),
    )
    translated: dict[str, Any] = translator.translate(
        sam_template, parameter_values={}, get_managed_policy_map=lambda: MANAGED_POLICY_MAP
    )
    return translated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)
    try:
        translated = translate(args.template, args.region)
    except InvalidDocumentException as exc:
        for cause in exc.causes:
            print(f"{args.template}: {cause.message}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(translated, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
