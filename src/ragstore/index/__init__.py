"""Vector indexes: the seam every index kind implements, and the kinds by name."""

from ragstore.index.base import IndexFactory, VectorIndex, create_index
from ragstore.index.flat import FlatIndex

__all__ = ["FlatIndex", "IndexFactory", "VectorIndex", "create_index"]
