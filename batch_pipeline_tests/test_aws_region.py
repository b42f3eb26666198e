"""The region comes from the same place for every AWS client: the explicit setting, then
``AWS_REGION`` (which the README promises and botocore itself does not read), then
``AWS_DEFAULT_REGION``, then the profile's, then us-east-1 (``settings.resolve_region``; the
storage gets the environment's through ``settings.s3_settings``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_pipeline.cli import main
from batch_pipeline.resources import SQSResource
from batch_pipeline.settings import resolve_region, s3_settings
from batch_pipeline_tests.conftest import drain_queue


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    assert resolve_region() == "us-east-1"
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = ap-south-1\n[profile other]\nregion = sa-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert resolve_region() == "ap-south-1"
    assert resolve_region(profile_name="other") == "sa-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    assert resolve_region() == "eu-central-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    assert resolve_region() == "eu-west-3"
    assert resolve_region("us-west-2") == "us-west-2"
    assert s3_settings().resolved_region() == "eu-west-3"
    assert SQSResource().get_client().meta.region_name == "eu-west-3"
    assert SQSResource(region_name="us-west-1").get_client().meta.region_name == "us-west-1"


@pytest.mark.slow
def test_deliver_to_sqs_with_only_aws_region_set(
    tmp_path: Path,
    sqs_client,
    sqs_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    source = tmp_path / "in.csv"
    source.write_text("id\n" + "".join(f"{i}\n" for i in range(25)))
    name = sqs_queue.rsplit("/", 1)[-1]
    code = main(
        ["run", str(source), "--output", str(tmp_path / "out"), "--deliver", f"sqs://{name}",
         "--records-per-message", "10", "--json"]
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, summary
    assert summary["delivered_messages"] == 3
    bodies = [json.loads(b) for b in drain_queue(sqs_client, sqs_queue)]
    assert sorted(int(r["id"]) for b in bodies for r in b["batch_data"]) == list(range(25))
