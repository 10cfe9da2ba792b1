"""One module per API shape: upstream's request models, `to_internal()`, and renderers."""
