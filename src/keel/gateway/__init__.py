"""The request pipeline as plain async code, no HTTP: route, retry, fall back, record."""
