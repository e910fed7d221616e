"""Analyzers beyond the built-in Snowball stemming (indexer.analyzer)."""
