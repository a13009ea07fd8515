"""Persistence: schema, engines, migrations, the batching span writer and the span repository.

Nothing is imported here: the recording process imports only what it writes with
(`keel.store.writer_process`), not the migration machinery.
"""
