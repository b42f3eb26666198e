"""Where things are kept: ``storage`` (local paths and ``s3://`` URIs behind one interface) and
keys' states (``state``, ``state_stores``, ``sql_state``, ``dynamodb_state``)."""
