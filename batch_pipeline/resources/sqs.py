"""The SQS resource, written the way dagster-aws writes its boto3 resources (its settings are
dagster-aws's, declared in ``resources.aws_config``; boto3 is imported when a client is
made)."""

from typing import Any

from batch_pipeline.resources.aws_config import Boto3Configuration, boto3_client

__all__ = ["SQSResource", "boto3_client"]


class SQSResource(Boto3Configuration):
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
