"""The `keel` command; every subcommand goes through bootstrap."""
