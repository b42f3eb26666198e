"""The ranges declared in ``core.common.settings`` are the ones ``prepare_batch`` enforces: a
value just outside is refused with a ConfigError, the bounds themselves are accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_pipeline.core.common.errors import ConfigError
from batch_pipeline.core.common.models import (
    ChunkingSettings,
    DeliverySettings,
    FailureSettings,
    RetrySettings,
)
from batch_pipeline.core.common.settings import Chunking, Delivery, Failures, Retry, Section
from batch_pipeline.core.initialize.prepare import prepare_batch
from batch_pipeline.core.stores.storage import Storage

# prepare_batch's keyword for each section, and the dataclass it takes.
KEYWORDS: dict[type[Section], tuple[str, type]] = {
    Chunking: ("chunking", ChunkingSettings),
    Delivery: ("delivery", DeliverySettings),
    Retry: ("retry", RetrySettings),
    Failures: ("failures", FailureSettings),
}
BOUNDED = [
    (section, name, setting)
    for section in KEYWORDS
    for name, setting in section.settings().items()
    if setting.ge is not None or setting.le is not None
]


def prepare(tmp_path: Path, section: type[Section], name: str, value: float) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id\n1\n")
    keyword, settings = KEYWORDS[section]
    prepare_batch(
        Storage(), str(source), output=str(tmp_path / "out"), **{keyword: settings(**{name: value})}
    )


def test_some_settings_are_bounded() -> None:
    assert len(BOUNDED) >= 5


@pytest.mark.parametrize(("section", "name", "setting"), BOUNDED, ids=[b[1] for b in BOUNDED])
def test_prepare_batch_enforces_the_declared_range(tmp_path, section, name, setting) -> None:
    for bound, outside in ((setting.ge, -1), (setting.le, +1)):
        if bound is None:
            continue
        prepare(tmp_path, section, name, bound)  # the bound itself is fine
        with pytest.raises(ConfigError):
            prepare(tmp_path, section, name, bound + outside)


@pytest.mark.parametrize(("section", "name", "setting"), BOUNDED, ids=[b[1] for b in BOUNDED])
def test_not_a_number_is_outside_every_range(tmp_path, section, name, setting) -> None:
    """NaN compares false with everything: a check written as "below the bound" lets it through,
    and a NaN tolerance would then tolerate every failure."""
    with pytest.raises(ConfigError):
        prepare(tmp_path, section, name, float("nan"))
