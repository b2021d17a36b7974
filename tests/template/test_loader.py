"""local.template.load_template: CloudFormation YAML in, JSON-form data out."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from local.template import load_template


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_short_tags_become_their_long_form(tmp_path: Path) -> None:
    # Given a template using short tags, nested, in scalar, sequence and mapping form
    path = write(
        tmp_path,
        """
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  NotProd: !Not [!Condition IsProd]
Resources:
  Thing:
    Properties:
      Name: !Join ["-", [app, !Select [2, !Split ["/", !Ref AWS::StackId]]]]
      Arn: !GetAtt Queue.Arn
      ArnList: !GetAtt [Queue, Arn]
      Url: !Sub "https://${Api}.example.com"
      Mapped: !Sub
        - "arn:${Partition}:s3:::${Name}"
        - Name: !Ref Bucket
      Maybe: !If [IsProd, !Base64 "x", !Ref AWS::NoValue]
""",
    )

    # When it is loaded
    template = load_template(path)

    # Then every tag is spelled as in a JSON template
    assert template["Conditions"] == {
        "IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
        "NotProd": {"Fn::Not": [{"Condition": "IsProd"}]},
    }
    properties = template["Resources"]["Thing"]["Properties"]
    assert properties["Name"] == {
        "Fn::Join": ["-", ["app", {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}]]
    }
    assert properties["Arn"] == properties["ArnList"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert properties["Url"] == {"Fn::Sub": "https://${Api}.example.com"}
    assert properties["Mapped"] == {"Fn::Sub": ["arn:${Partition}:s3:::${Name}", {"Name": {"Ref": "Bucket"}}]}
    assert properties["Maybe"] == {"Fn::If": ["IsProd", {"Fn::Base64": "x"}, {"Ref": "AWS::NoValue"}]}


def test_dates_stay_strings_as_cloudformation_reads_them(tmp_path: Path) -> None:
    # Given a policy version written without quotes
    path = write(tmp_path, "PolicyDocument:\n  Version: 2012-10-17\n")

    # When it is loaded
    template = load_template(path)

    # Then it is the string IAM expects, and PyYAML's own safe loader is left as it was
    assert template == {"PolicyDocument": {"Version": "2012-10-17"}}
    assert not isinstance(yaml.safe_load("v: 2012-10-17")["v"], str)


def test_unknown_tags_and_non_templates_are_refused(tmp_path: Path) -> None:
    # Given a file with a tag CloudFormation does not have, and one that is a list
    unknown_tag = write(tmp_path, "Value: !Reference Thing\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- just\n- a list\n", encoding="utf-8")

    # Then neither loads
    with pytest.raises(yaml.constructor.ConstructorError, match="!Reference"):
        load_template(unknown_tag)
    with pytest.raises(ValueError, match="not a CloudFormation template"):
        load_template(a_list)
