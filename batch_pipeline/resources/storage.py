"""The storage resource: local paths and s3:// URIs behind one interface."""

from dagster import ConfigurableResource
from pydantic import Field

from batch_pipeline.core.stores.storage import S3Settings, Storage
from batch_pipeline.settings import s3_settings


class StorageResource(ConfigurableResource):
    """Reads sources and writes results, locally or on S3 (through pyarrow's S3 filesystem).

    Every field defaults to the AWS SDK's own resolution: the credential chain, the region from
    ``AWS_REGION``, the endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (read by
    ``settings.s3_settings`` when the storage is made).

    Example:
        .. code-block:: python

            from dagster import Definitions, EnvVar
            from batch_pipeline.resources import StorageResource

            defs = Definitions(
                jobs=[batch_job],
                resources={"storage": StorageResource(region_name="eu-west-1")},
            )
    """

    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint URL; unset: AWS_ENDPOINT_URL(_S3), else AWS."
    )
    region_name: str | None = Field(
        default=None, description="AWS region; unset: AWS_REGION or AWS_DEFAULT_REGION."
    )
    max_attempts: int = Field(
        default=5, description="Attempts per S3 request (the SDK's standard retry mode)."
    )
    aws_access_key_id: str | None = Field(
        default=None, description="Access key; unset: the standard credential chain."
    )
    aws_secret_access_key: str | None = Field(default=None, description="Secret key.")
    aws_session_token: str | None = Field(default=None, description="Session token.")

    def get_storage(self) -> Storage:
        return Storage(
            s3_settings(
                S3Settings(
                    endpoint_url=self.endpoint_url,
                    region_name=self.region_name,
                    aws_access_key_id=self.aws_access_key_id,
                    aws_secret_access_key=self.aws_secret_access_key,
                    aws_session_token=self.aws_session_token,
                    max_attempts=self.max_attempts,
                )
            )
        )
