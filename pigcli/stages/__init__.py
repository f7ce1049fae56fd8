"""One module per stage; each exposes one plain function that the CLI wraps."""
