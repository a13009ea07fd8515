"""Tracing: OTLP decoding, the mapping of instrumentation attributes, and ingestion."""
