"""Query embedding on ONNX Runtime: same vectors as torch, exported once, cached, repaired."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from ragstore.embed import Embedder
from ragstore.embed.local import MODEL_CACHE_ENV, MiniLMEmbedder

QUERIES = [
    "What is the role of p53 in DNA repair?",
    "covid-19 vaccine efficacy in adults over 65",
    "BRCA1",
    "",
    " ",
    "?",
    "Naïve café — 東京の天気は Привет, мир! 🙂🧬 β-catenin ≥ 5 µM",
    "ALL CAPS QUERY ABOUT MITOCHONDRIAL DYSFUNCTION!!!",
    "tab\tand\nnewline separated\r\nwords",
    "gene expression " * 200,  # 400 content tokens: truncated to the model's 256
]


def test_onnx_query_vectors_equal_torch(embedder: Embedder) -> None:
    assert isinstance(embedder, MiniLMEmbedder)
    onnx = np.stack([embedder.embed_query(q) for q in QUERIES])
    torch = embedder.embed_documents(QUERIES)
    assert onnx.dtype == np.float32
    assert onnx.shape == (len(QUERIES), embedder.dim)
    assert embedder.query_runtime == "onnxruntime"  # not the torch fallback
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(onnx * torch, axis=1)
    assert cosines.min() >= 0.99999, cosines
    assert np.abs(onnx - torch).max() < 1e-5


def test_long_query_is_truncated_like_torch(embedder: Embedder) -> None:
    long = "gene expression " * 200
    longer = long + "something else entirely that lies past token 256"
    assert embedder.max_tokens < len(embedder.token_offsets(long))
    np.testing.assert_array_equal(embedder.embed_query(long), embedder.embed_query(longer))


def test_export_is_cached_under_env_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path))
    first = MiniLMEmbedder()
    path = first.query_model_path
    assert path.is_relative_to(tmp_path) and path.name == "query.onnx"
    assert not path.exists()  # exported on first use, not when the embedder loads
    vector = first.embed_query("cached export")
    assert path.is_file()
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    mtime = path.stat().st_mtime_ns

    second = MiniLMEmbedder()
    assert second.query_model_path == path
    np.testing.assert_array_equal(second.embed_query("cached export"), vector)
    assert path.stat().st_mtime_ns == mtime  # loaded, not exported again

    path.write_bytes(b"not an onnx model" * 1000)
    third = MiniLMEmbedder()
    with caplog.at_level(logging.WARNING, logger="ragstore.embed.local"):
        np.testing.assert_array_equal(third.embed_query("cached export"), vector)
    assert "re-exporting damaged query model" in caplog.text
    assert third.query_runtime == "onnxruntime"
    assert path.stat().st_size > 1_000_000  # the real model again
    assert list(path.parent.iterdir()) == [path]


def test_falls_back_to_torch_without_onnxruntime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    embedder = MiniLMEmbedder()
    with caplog.at_level(logging.WARNING, logger="ragstore.embed.local"):
        vector = embedder.embed_query(QUERIES[0])
    assert "runs on torch" in caplog.text
    assert embedder.query_runtime == "torch"
    assert not embedder.query_model_path.exists()
    np.testing.assert_allclose(vector, embedder.embed_documents(QUERIES[:1])[0], atol=1e-6)
