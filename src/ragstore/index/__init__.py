"""Vector indexes: the exact growing-segment index, and the FAISS kinds sealed segments use."""

from ragstore.index.base import Ids, Matrix, Scores
from ragstore.index.flat import FlatIndex

__all__ = ["FlatIndex", "Ids", "Matrix", "Scores"]
