"""The settings of this project's boto3 resources (``SQSResource``, ``StateStoreResource``): the
fields of dagster-aws's ``ResourceWithBoto3Configuration``, declared here so that loading the
resources imports neither dagster-aws (half a second of its components) nor boto3; a test
compares the fields with dagster-aws's so that they do not drift. boto3 and dagster-aws's retry
config are imported when a client is made."""

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from batch_pipeline.settings import resolve_region


class Boto3Configuration(ConfigurableResource):
    """The fields of dagster-aws's ``ResourceWithBoto3Configuration``, with its defaults and
    descriptions."""

    region_name: str | None = Field(
        default=None, description="Specifies a custom region for the Boto3 session"
    )
    max_attempts: int = Field(
        default=5,
        description=(
            "This provides Boto3's retry handler with a value of maximum retry attempts, where the"
            " initial call counts toward the max_attempts value that you provide"
        ),
    )
    profile_name: str | None = Field(
        default=None, description="Specifies a profile to connect that session"
    )
    use_ssl: bool = Field(
        default=True, description="Whether or not to use SSL. By default, SSL is used."
    )
    endpoint_url: str | None = Field(
        default=None, description="Specifies a custom endpoint for the Boto3 session."
    )
    verify: bool | None = Field(
        default=True,
        description=(
            "Whether or not to verify SSL certificates. By default SSL certificates are verified."
        ),
    )
    aws_access_key_id: str | None = Field(
        default=None, description="AWS access key ID to use when creating the boto3 session."
    )
    aws_secret_access_key: str | None = Field(
        default=None, description="AWS secret access key to use when creating the boto3 session."
    )
    aws_session_token: str | None = Field(
        default=None, description="AWS session token to use when creating the boto3 session."
    )


def boto3_client(resource: Boto3Configuration, service: str) -> Any:
    """A boto3 client of ``service`` with the dagster-aws settings of ``resource``; the region
    from ``settings.resolve_region`` when unset. boto3 and dagster-aws's retry config are
    imported here, when a client is made."""
    import boto3
    from dagster_aws.utils import construct_boto_client_retry_config

    session = boto3.session.Session(profile_name=resource.profile_name)
    return session.client(
        service,
        region_name=resolve_region(resource.region_name, resource.profile_name),
        endpoint_url=resource.endpoint_url,
        use_ssl=resource.use_ssl,
        verify=resource.verify,
        aws_access_key_id=resource.aws_access_key_id,
        aws_secret_access_key=resource.aws_secret_access_key,
        aws_session_token=resource.aws_session_token,
        config=construct_boto_client_retry_config(resource.max_attempts),
    )
