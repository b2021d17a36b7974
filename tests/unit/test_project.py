"""Things that drift unless a test holds them: the layer's pins, the README's parameters."""

from __future__ import annotations

import subprocess
from pathlib import Path

from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def pins(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line and not line.lstrip().startswith("#"))


def test_layer_requirements_are_exported_from_the_lock(tmp_path: Path) -> None:
    exported = tmp_path / "requirements.txt"
    subprocess.run(
        ["make", "--no-print-directory", "-s", "layer-requirements", f"LAYER_REQUIREMENTS={exported}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    committed = (ROOT / "layers" / "pipeline" / "requirements.txt").read_text()
    assert pins(exported.read_text()) == pins(committed), "run `make layer-requirements` and commit"
    # The layer pins the SDK pair itself (aws-xray-sdk would pull botocore in anyway).
    assert {line.split("==")[0] for line in pins(committed)} >= {"boto3", "botocore", "aws-lambda-powertools"}


def test_the_readme_documents_every_stack_parameter() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in load_template(ROOT / "template.yaml")["Parameters"]:
        assert f"| `{name}` |" in readme, f"README lacks parameter {name}"
