"""Built-in backends, one module each (looked up through indexer.registry)."""
