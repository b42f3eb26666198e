"""``resources.aws_config.Boto3Configuration`` declares dagster-aws's boto3 settings itself (so
that the resources load without dagster-aws): it must keep the same fields as dagster-aws's
``ResourceWithBoto3Configuration``, with the same types, defaults and descriptions (clients
use dagster-aws's own retry config, imported when one is made)."""

from dagster_aws.utils import ResourceWithBoto3Configuration

from batch_pipeline.resources import SQSResource, StateStoreResource
from batch_pipeline.resources.aws_config import Boto3Configuration


def _fields(cls: type) -> dict[str, tuple[object, object, object]]:
    return {
        name: (field.annotation, field.default, field.description)
        for name, field in cls.model_fields.items()
    }


def test_fields_are_dagster_aws_boto3_fields() -> None:
    assert _fields(Boto3Configuration) == _fields(ResourceWithBoto3Configuration)


def test_resources_have_the_boto3_fields() -> None:
    theirs = _fields(ResourceWithBoto3Configuration)
    for resource in (SQSResource, StateStoreResource):
        assert {k: v for k, v in _fields(resource).items() if k in theirs} == theirs
