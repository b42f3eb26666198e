"""Where steps hand each other their outputs (chunk descriptors, summaries, the spec): the
instance's storage folder by default, an S3 prefix when ``s3_bucket`` is set (workers on other
machines share no disk: the celery executor needs it)."""

from dagster import ConfigurableIOManagerFactory, InitResourceContext, IOManager
from dagster._core.storage.fs_io_manager import PickledObjectFilesystemIOManager
from pydantic import Field


class IntermediatesIOManager(ConfigurableIOManagerFactory):
    """Pickled step outputs on the local disk (Dagster's ``fs_io_manager``) or, with
    ``s3_bucket``, on S3 through dagster-aws's ``S3PickleIOManager`` (credentials, region and
    endpoint from the standard AWS settings). Keys are per run, step and output, so a step run
    again overwrites its own output.

    Example run config for the celery executor::

        resources:
          io_manager:
            config: {s3_bucket: my-bucket, s3_prefix: batch-pipeline/intermediates}
    """

    s3_bucket: str | None = Field(
        default=None,
        description="S3 bucket of the step outputs; unset: the Dagster instance's storage "
        "folder (one machine only).",
    )
    s3_prefix: str = Field(
        default="batch-pipeline/intermediates",
        description="Key prefix of the step outputs in s3_bucket.",
    )

    def create_io_manager(self, context: InitResourceContext) -> IOManager:
        if self.s3_bucket:
            from dagster_aws.s3 import S3PickleIOManager, S3Resource

            return S3PickleIOManager(
                s3_resource=S3Resource(), s3_bucket=self.s3_bucket, s3_prefix=self.s3_prefix
            )
        assert context.instance is not None
        return PickledObjectFilesystemIOManager(base_dir=context.instance.storage_directory())
