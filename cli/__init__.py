"""The `coffer` command-line interface (entry point: `cli.main:main`)."""
