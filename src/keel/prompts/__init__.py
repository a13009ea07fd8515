"""The prompt registry: files, rules, diffs and the gateway's resolution cache."""
