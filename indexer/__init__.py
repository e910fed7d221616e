"""indexer: automated subject indexing with controlled vocabularies."""

__version__ = "0.1.0"
