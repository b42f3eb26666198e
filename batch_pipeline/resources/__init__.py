from batch_pipeline.resources.intermediates import IntermediatesIOManager
from batch_pipeline.resources.ledger import LedgerResource
from batch_pipeline.resources.sqs import SQSResource
from batch_pipeline.resources.state_store import StateStoreResource
from batch_pipeline.resources.storage import StorageResource

__all__ = [
    "IntermediatesIOManager",
    "LedgerResource",
    "SQSResource",
    "StateStoreResource",
    "StorageResource",
]
