"""Where things are kept: ``storage`` (local paths and ``s3://`` URIs behind one interface)."""
