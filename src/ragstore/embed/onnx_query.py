"""The query encoder on ONNX Runtime: the same weights as the torch model, exported once.

A query is one short input, where torch's per-call overhead dominates; ONNX Runtime on one
thread embeds it faster (``benchmarks/embed_query.py``). Two precisions:

- ``fp32``: the export itself, within ~1e-6 of the torch vector.
- ``int8``: the export with every linear layer's weights quantized per output channel
  to int8 and their inputs quantized on the fly (ONNX Runtime's dynamic quantization).
  About 2.5x faster again; cosine to the torch vector ~0.994, and nDCG@10 on SciFact and
  Cranfield within 0.007 of fp32 either way (docs/search.md has the figures).

Documents are always embedded by torch in fp32; only queries take this path. Each file is
written under a temporary name and renamed, so a reader never sees half of one, and
processes loading the encoder at once (a server's workers) take turns on a lock file, so
only the first makes the files; a file that fails to load or disagrees with torch on a
probe text is made again.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import platform
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragstore.embed.base import Vectors

QueryPrecision = Literal["fp32", "int8"]
PRECISIONS: tuple[QueryPrecision, ...] = ("fp32", "int8")


def _int8_saturates() -> bool:
    """Whether ONNX Runtime's int8 products may saturate on this CPU: an x86 CPU without
    VNNI adds pairs of int8 products in 16 bits, which full-range weights can overflow
    (onnxruntime's quantization guide: use ``reduce_range`` there). Measured on such a
    host, full range dropped the median query cosine to torch from 0.994 to 0.990."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # cannot tell: the safe choice
    return not any(flag in flags for flag in ("avx512_vnni", "avx_vnni"))


REDUCED_RANGE = _int8_saturates()
"""Quantize weights to 7 bits on CPUs where 8-bit ones may saturate."""
FILENAMES: dict[QueryPrecision, str] = {
    "fp32": "query.onnx",
    "int8": "query-int8-all-7bit.onnx" if REDUCED_RANGE else "query-int8-all.onnx",
}
"""The cached files; the int8 one is named for what it quantizes (every layer, in 7 or 8
bits), so a file an older version or another CPU made is not taken for it."""
MIN_COSINE: dict[QueryPrecision, float] = {"fp32": 0.9999, "int8": 0.98}
"""How close to the torch vector a probe text must come for a cached file to be used."""

_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_PROBE = "Does a damaged cached export still agree with torch?"

log = logging.getLogger(__name__)


class OnnxQueryEncoder:
    """Tokenizer, transformer, mean pooling and L2 norm of one query, on one thread."""

    def __init__(self, session: Any, tokenizer: Any) -> None:
        self._session = session
        self._tokenizer = tokenizer

    @classmethod
    def load(
        cls,
        folder: Path,
        precision: QueryPrecision,
        model: Any,
        max_seq: int,
        reference: Callable[[str], Vectors],
    ) -> OnnxQueryEncoder:
        """The encoder of ``precision`` for the sentence-transformers ``model``, from the
        files cached in ``folder``, making them when missing or damaged; ``reference``
        embeds the probe text with torch."""
        import onnxruntime  # noqa: F401 - fail before exporting when it is missing
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(model.tokenizer.backend_tokenizer.to_str())
        tokenizer.enable_truncation(max_length=max_seq)
        tokenizer.no_padding()

        def opened(wanted: QueryPrecision) -> OnnxQueryEncoder:
            path = folder / FILENAMES[wanted]
            return cls(_session(path), tokenizer)._checked(reference, MIN_COSINE[wanted])

        with _exclusive(folder):
            _make_missing(folder, precision, model)
            try:
                return opened(precision)
            except Exception as exc:  # onnxruntime raises its own types for a bad file
                log.warning(
                    "making damaged query model %s again: %s", folder / FILENAMES[precision], exc
                )
            if precision == "int8":
                try:
                    opened("fp32")  # the int8 file is made from it: is that one sound?
                except Exception:
                    _export(model, folder / FILENAMES["fp32"])
            _make(folder, precision, model)
            return opened(precision)

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

    def _checked(self, reference: Callable[[str], Vectors], least: float) -> OnnxQueryEncoder:
        cosine = float(self.embed(_PROBE) @ reference(_PROBE))
        if not cosine >= least:
            raise ValueError(f"its vector differs from torch's (cosine {cosine:.6f})")
        return self


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one query, one core: see MiniLMEmbedder.embed_query
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _make_missing(folder: Path, precision: QueryPrecision, model: Any) -> None:
    """Make the file of ``precision`` if it is not there (int8 needs the fp32 one)."""
    if (folder / FILENAMES[precision]).exists():
        return
    if precision == "int8":
        _make_missing(folder, "fp32", model)
    _make(folder, precision, model)


def _make(folder: Path, precision: QueryPrecision, model: Any) -> None:
    if precision == "fp32":
        _export(model, folder / FILENAMES["fp32"])
    else:
        _quantize(folder / FILENAMES["fp32"], folder / FILENAMES["int8"])


def _export(model: Any, path: Path) -> None:
    """Export transformer + mean pooling + L2 norm to ``path`` (fp32, dynamic shapes).

    The transformer is copied because ``torch.export`` patches the module it traces while
    another thread may be embedding documents with it.
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
    with (
        _replaced(path) as temporary,
        _quiet("torch.onnx", "torch.export", "onnxscript", "onnx_ir"),
    ):
        program = torch.onnx.export(
            PooledEncoder(transformer),
            tuple(example[name] for name in _INPUTS),
            dynamo=True,
            input_names=list(_INPUTS),
            output_names=["sentence_embedding"],  # "embedding" clashes with a node name
            dynamic_shapes={name: {0: batch, 1: sequence} for name in _INPUTS},
            verbose=False,
        )
        assert program is not None
        program.save(temporary, external_data=False)


def _quantize(source: Path, path: Path) -> None:
    """Dynamic int8 quantization of every MatMul with weights in ``source``, per output
    channel (7-bit weights where 8-bit ones may saturate, see ``REDUCED_RANGE``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _replaced(path) as temporary, _quiet():
        quantize_dynamic(
            source,
            temporary,
            per_channel=True,
            reduce_range=REDUCED_RANGE,
            weight_type=QuantType.QInt8,
        )


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the folder's lock file (beside it): one process at a time checks and makes
    its files (the quantizer writes a scratch file of a fixed name beside its input)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with folder.with_name(f"{folder.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def _replaced(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path``, renamed to it when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Silence warnings, the named loggers and messages logged on the root logger itself
    (the quantizer's advice), below ERROR; other loggers' records pass as before."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    root = logging.getLogger()
    only_errors = _AtLeast(logging.ERROR)
    root.addFilter(only_errors)  # a logger's filters see only records logged on it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(only_errors)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _AtLeast(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level
