"""Vector indexes: the exact growing-segment index, and the FAISS kinds sealed segments use."""

from ragstore.index.base import AllowedMask, Ids, Matrix, Scores, id_mask
from ragstore.index.flat import FlatIndex

__all__ = ["AllowedMask", "FlatIndex", "Ids", "Matrix", "Scores", "id_mask"]
