"""ASGI application: translates HTTP to gateway calls; no SQL and no business rules here."""
