"""Delivery of valid records downstream: packing records into messages, and the sinks."""
