"""Synthetic vectors shaped like real ones, to measure an index at sizes a store does not
hold yet.

A Gaussian mixture fitted to real embeddings: k-means centroids, one residual covariance
shared by all clusters (so the spread has the real intrinsic dimension) and a per-cluster
scale. Uniform random vectors would make every index look worse than it is (no
neighbourhood structure) and copies of real vectors better (exact duplicates); the
mixture keeps recall and search cost close to what the real collection would show at
the same size (``benchmarks/ann.py`` checks this against the real vectors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss as _faiss
import numpy as np
import numpy.typing as npt

from ragstore.types import Matrix

faiss: Any = _faiss
SAMPLE_CHUNK = 100_000
"""Vectors drawn at a time, so drawing a million stays within a few hundred MB."""


def normalize(x: npt.NDArray[np.floating[Any]]) -> Matrix:
    """Rows scaled to unit length, as float32."""
    out: Matrix = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


@dataclass
class VectorShape:
    """A Gaussian mixture fitted to real vectors: shared residual shape, per-cluster scale."""

    centroids: Matrix
    weights: npt.NDArray[np.float64]
    scales: npt.NDArray[np.float64]
    chol: npt.NDArray[np.float64]

    @property
    def dim(self) -> int:
        """Dimension of the vectors drawn."""
        return int(self.centroids.shape[1])

    @classmethod
    def fit(cls, real: Matrix, centroids: int, seed: int) -> VectorShape:
        """k-means on ``real``, then the residual covariance and per-cluster RMS norms."""
        dim = real.shape[1]
        centroids = max(1, min(centroids, len(real) // 4))
        kmeans = faiss.Kmeans(dim, centroids, niter=25, seed=seed, verbose=False)
        kmeans.train(np.ascontiguousarray(real, dtype=np.float32))
        _, assign = kmeans.index.search(real, 1)
        assign = assign[:, 0]
        residuals = (real - kmeans.centroids[assign]).astype(np.float64)
        sizes = np.bincount(assign, minlength=centroids).astype(np.float64)
        sq = np.bincount(assign, weights=(residuals**2).sum(1), minlength=centroids)
        scales = np.sqrt(sq / np.maximum(sizes, 1))
        scales[sizes < 2] = np.median(scales[sizes >= 2])
        unit = residuals / scales[assign][:, None]
        cov = unit.T @ unit / len(unit)
        cov += np.eye(dim) * 1e-6 * np.trace(cov) / dim
        return cls(kmeans.centroids.copy(), sizes / sizes.sum(), scales, np.linalg.cholesky(cov))

    def sample(self, rng: np.random.Generator, n: int) -> Matrix:
        """``n`` unit vectors, drawn in chunks so memory stays small."""
        out = np.empty((n, self.dim), dtype=np.float32)
        for start in range(0, n, SAMPLE_CHUNK):
            m = min(SAMPLE_CHUNK, n - start)
            cluster = rng.choice(len(self.weights), size=m, p=self.weights)
            z = rng.standard_normal((m, self.dim))
            x = self.centroids[cluster] + self.scales[cluster][:, None] * (z @ self.chol.T)
            out[start : start + m] = normalize(x.astype(np.float32))
        return out

    def patch(self, density: float, rng: np.random.Generator) -> tuple[VectorShape, VectorShape]:
        """A region of the space as crowded as a collection ``density`` times larger: the
        ``1 / density`` share of the components nearest one (drawn by weight), and the
        inner quarter of those, where the region's queries come from (their neighbours
        lie inside it)."""
        count = max(1, round(len(self.weights) / density))
        seed = rng.choice(len(self.weights), p=self.weights)
        nearest = np.argsort(-(self.centroids @ self.centroids[seed]), kind="stable")
        return self._part(nearest[:count]), self._part(nearest[: max(1, count // 4)])

    def _part(self, components: npt.NDArray[np.intp]) -> VectorShape:
        weights = self.weights[components]
        return VectorShape(self.centroids[components], weights / weights.sum(),
                           self.scales[components], self.chol)  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """What was fitted, for reports."""
        eig = np.linalg.eigvalsh(self.chol @ self.chol.T)
        return {
            "centroids": len(self.weights),
            "residual_rms_norm_median": round(float(np.median(self.scales)), 4),
            "residual_rms_norm_range": [
                round(float(self.scales.min()), 4),
                round(float(self.scales.max()), 4),
            ],
            "residual_covariance_participation_ratio": round(
                float(eig.sum() ** 2 / (eig**2).sum()), 1
            ),
        }
