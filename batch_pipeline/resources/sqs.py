"""The SQS resource, written the way dagster-aws writes its boto3 resources."""

from typing import Any

import boto3
from dagster_aws.utils import ResourceWithBoto3Configuration, construct_boto_client_retry_config

from batch_pipeline.settings import resolve_region


class SQSResource(ResourceWithBoto3Configuration):
    """Gives access to Amazon SQS: ``get_client()`` returns a boto3 SQS client.

    Settings are those of every dagster-aws boto3 resource (``region_name``, ``endpoint_url``,
    ``max_attempts``, ``profile_name``, ``use_ssl``, ``verify`` and explicit credentials); unset,
    boto3 resolves them itself (``AWS_ENDPOINT_URL_SQS``/``AWS_ENDPOINT_URL``, the credential
    chain), except the region, which comes from ``settings.resolve_region`` as for S3
    (``AWS_REGION``, then ``AWS_DEFAULT_REGION``, the profile's, us-east-1).

    Example:
        .. code-block:: python

            from dagster import Definitions, op
            from batch_pipeline.resources import SQSResource

            @op
            def queue_depth(sqs: SQSResource) -> int:
                client = sqs.get_client()
                url = client.get_queue_url(QueueName="leads")["QueueUrl"]
                attributes = client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                return int(attributes["ApproximateNumberOfMessages"])

            defs = Definitions(resources={"sqs": SQSResource(region_name="eu-west-1")})
    """

    def get_client(self) -> Any:
        return boto3_client(self, "sqs")


def boto3_client(resource: ResourceWithBoto3Configuration, service: str) -> Any:
    """A boto3 client of ``service`` with the dagster-aws settings of ``resource``; the region
    from ``settings.resolve_region`` when unset."""
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
