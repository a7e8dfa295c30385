"""Any sentence-transformers model, run locally on the CPU and loaded offline.

Named ``sentence-transformers:<folder or model id>``: a folder holding a saved
sentence-transformers model, or a model id already in the local Hugging Face cache
(``sentence-transformers:BAAI/bge-small-en-v1.5``). Nothing is fetched from a model hub:
a model that is not on disk is refused with :class:`~ragstore.errors.InvalidConfig`.

The recorded version is a content hash of the files the model is loaded from (weights,
configs, tokenizer), so a collection refuses the same name holding other weights.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ragstore.embed.base import Vectors
from ragstore.errors import InvalidConfig
from ragstore.ingest.chunking import hf_token_offsets

SCHEME = "sentence-transformers"
_SPECIAL_TOKENS = 2  # [CLS] and [SEP] count against the model's sequence length
_HASHED_SUFFIXES = frozenset({".safetensors", ".bin", ".json", ".txt", ".model"})
"""Files that make a model's vectors: weights, configs, vocabularies (not its README)."""


class SentenceTransformerEmbedder:
    """A sentence-transformers model from ``model``, a folder or a cached model id.

    Passages are embedded in batches of similar token length, so little is padding;
    a query on one thread. Where the model defines ``query`` or ``document`` prompts,
    they are applied. Safe to share between threads: the model and its tokenizer
    (whose settings a call changes) are used one call at a time.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        name: str | None = None,
        version: str | None = None,
        batch_size: int = 32,
        batch_tokens: int = 8192,
    ) -> None:
        folder = model_folder(model)
        self._model = load_model(folder)
        self._tokenizer = self._model.tokenizer
        self._offsets = hf_token_offsets(self._tokenizer)
        self._batch_size = batch_size
        self._batch_tokens = batch_tokens
        self._dim = embedding_dimension(self._model)
        self._max_seq = int(self._model.max_seq_length or 512)
        self._name = name or f"{SCHEME}:{folder if Path(model).is_dir() else model}"
        self._version = version or weights_version(folder)
        self._torch_lock = threading.RLock()

    @property
    def name(self) -> str:
        """The name given, else ``sentence-transformers:`` and the absolute folder or the
        model id."""
        return self._name

    @property
    def version(self) -> str:
        """The version given, else ``blake3:`` and a hash of the model's files."""
        return self._version

    @property
    def dim(self) -> int:
        """The model's sentence embedding dimension."""
        return self._dim

    @property
    def max_tokens(self) -> int:
        """Content tokens that fit in one input (sequence length less special tokens)."""
        return self._max_seq - _SPECIAL_TOKENS

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Char span of each token of ``text``, from the model's own tokenizer."""
        with self._torch_lock:
            return self._offsets(text)

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Embed passages in batches of similar token length."""
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        with self._torch_lock:
            for batch in self._length_sorted_batches(texts):
                out[batch] = self._encode([texts[i] for i in batch])
        return out

    def embed_query(self, text: str) -> Vectors:
        """Embed one query with torch on one thread (a second gains little for one input)."""
        with torch_threads(1):
            return self._encode_one(text)

    def _encode_one(self, text: str) -> Vectors:
        with self._torch_lock:
            vectors = self._model.encode_query(
                [text], convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        vector: Vectors = np.asarray(vectors, dtype=np.float32)[0]
        return vector

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = self._model.encode_document(
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


def from_name(rest: str) -> SentenceTransformerEmbedder:
    """The embedder of ``sentence-transformers:<rest>`` (``rest`` a folder or model id)."""
    return SentenceTransformerEmbedder(rest)


def model_folder(model: str | Path) -> Path:
    """The absolute folder of ``model``: itself when it is a folder, else the snapshot of
    that model id in the local Hugging Face cache.

    Raises:
        InvalidConfig: neither a folder nor a cached model id.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:  # not cached, or not a valid model id
        raise InvalidConfig(
            f"sentence-transformers model {str(model)!r} is neither a folder nor in the "
            "local Hugging Face cache (ragstore never downloads models)",
            field="embedder",
        ) from None


def load_model(folder: Path) -> Any:
    """A ``SentenceTransformer`` on the CPU from ``folder``, without contacting a hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ImportError(
            "local embedders need sentence-transformers: pip install ragstore"
        ) from exc
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InvalidConfig(
            f"{folder} does not hold a sentence-transformers model: {exc}", field="embedder"
        ) from None
    finally:
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def weights_version(folder: Path) -> str:
    """``blake3:`` and a hash of the files that make the model's vectors: the weights,
    configs and vocabularies at the top of ``folder`` and in each module's folder."""
    import blake3

    digest = blake3.blake3()
    for path in _model_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0".encode())
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return f"blake3:{digest.hexdigest()[:32]}"


def _model_files(folder: Path) -> list[Path]:
    folders = [folder, *(folder / module for module in _module_paths(folder))]
    return sorted(
        path
        for directory in folders
        for path in directory.iterdir()
        if path.is_file() and path.suffix in _HASHED_SUFFIXES and not path.name.startswith(".")
    )


def _module_paths(folder: Path) -> list[str]:
    import json

    modules = folder / "modules.json"
    if not modules.is_file():
        return []
    listed = json.loads(modules.read_text(encoding="utf-8"))
    paths = {str(module.get("path", "")) for module in listed}
    return sorted(p for p in paths if p and (folder / p).is_dir())


def embedding_dimension(model: Any) -> int:
    """The sentence embedding dimension of a ``SentenceTransformer``."""
    getter = getattr(model, "get_embedding_dimension", None)
    if getter is None:  # sentence-transformers < 5.2
        getter = model.get_sentence_embedding_dimension
    return int(getter())


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with torch's intra-op thread count set to ``count``."""
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
