from batch_pipeline.resources.ledger import LedgerResource
from batch_pipeline.resources.sqs import SQSResource
from batch_pipeline.resources.storage import StorageResource

__all__ = ["LedgerResource", "SQSResource", "StorageResource"]
