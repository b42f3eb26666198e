"""A queue named wrong is refused before any work: ``--deliver sqs://`` (no name) processed
every chunk and then failed in ``deliver``."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import DeliverySettings, FailureSettings
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.stores.storage import Storage

BAD = ["sqs://", "sqs://   ", "sqs://a/b", "sqs://a b", "sqs://" + "q" * 81, "sqs://.fifo"]
GOOD = [
    "sqs://leads-queue",
    "sqs://Leads_2",
    "sqs://leads.fifo",
    "sqs://" + "q" * 80,
    "https://sqs.us-east-1.amazonaws.com/123456789012/leads",
    "sqs://http://127.0.0.1:5000/123456789012/leads",
]


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "in.csv"
    path.write_text("id\n1\n")
    return str(path)


@pytest.mark.parametrize("target", BAD)
def test_a_queue_without_a_valid_name_is_refused_up_front(
    target: str, source: str, tmp_path: Path
) -> None:
    out = str(tmp_path / "out")
    with pytest.raises(ConfigError, match=r"^delivery target .* queue name"):
        prepare_batch(Storage(), source, output=out, delivery=DeliverySettings(target=target))
    with pytest.raises(ConfigError, match=r"^dead_letter_queue .* queue name"):
        prepare_batch(
            Storage(), source, output=out, failures=FailureSettings(dead_letter_queue=target)
        )


@pytest.mark.parametrize("target", GOOD)
def test_queue_names_and_urls_pass(target: str, source: str, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    spec = prepare_batch(Storage(), source, output=out, delivery=DeliverySettings(target=target))
    assert spec.delivery.target == target
    prepare_batch(Storage(), source, output=out, failures=FailureSettings(dead_letter_queue=target))
