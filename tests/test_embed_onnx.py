"""Query embedding on ONNX Runtime: fp32 equals torch, int8 stays close and ranks alike;
both are made once, cached, and made again when damaged."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from ragstore.embed import QUERY_PRECISION_ENV, Embedder, load_default
from ragstore.embed.local import MODEL_CACHE_ENV, MiniLMEmbedder
from ragstore.embed.onnx_query import FILENAMES
from ragstore.errors import InvalidConfig

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
PASSAGES = [
    "The tumour suppressor p53 activates DNA repair genes after damage.",
    "Vaccine efficacy against COVID-19 fell with age among older adults.",
    "Mitochondrial dysfunction drives insulin resistance in muscle.",
    "BRCA1 mutations raise the lifetime risk of breast cancer.",
    "Recipes for sourdough bread need a mature starter.",
]


@pytest.fixture(scope="module")
def fp32() -> MiniLMEmbedder:
    return MiniLMEmbedder(query_precision="fp32")


def test_fp32_query_vectors_equal_torch(fp32: MiniLMEmbedder) -> None:
    onnx_vectors = np.stack([fp32.embed_query(q) for q in QUERIES])
    torch_vectors = fp32.embed_documents(QUERIES)
    assert onnx_vectors.dtype == np.float32
    assert onnx_vectors.shape == (len(QUERIES), fp32.dim)
    assert fp32.query_runtime == "onnxruntime"  # not the torch fallback
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(onnx_vectors * torch_vectors, axis=1)
    assert cosines.min() >= 0.99999, cosines
    assert np.abs(onnx_vectors - torch_vectors).max() < 1e-5


def test_int8_query_vectors_stay_close_to_torch_and_rank_passages_alike(
    embedder: Embedder, fp32: MiniLMEmbedder
) -> None:
    assert isinstance(embedder, MiniLMEmbedder) and embedder.query_precision == "int8"
    assert embedder.query_model_path.name == FILENAMES["int8"]
    int8 = np.stack([embedder.embed_query(q) for q in QUERIES])
    exact = np.stack([fp32.embed_query(q) for q in QUERIES])
    assert embedder.query_runtime == "onnxruntime"
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(int8 * exact, axis=1)
    # inputs with no words ("", "?") lose the most: about 0.981
    assert cosines.min() >= 0.975 and np.median(cosines) >= 0.99, cosines
    assert not np.array_equal(int8, exact)  # really the quantized model
    passages = embedder.embed_documents(PASSAGES)
    for query in QUERIES[:3] + QUERIES[7:8]:
        by_int8 = np.argsort(-(passages @ embedder.embed_query(query)))
        by_fp32 = np.argsort(-(passages @ fp32.embed_query(query)))
        assert by_int8[0] == by_fp32[0], query


def test_int8_quantizes_every_linear_layer(embedder: Embedder) -> None:
    assert isinstance(embedder, MiniLMEmbedder)
    embedder.embed_query("make sure the files exist")
    exported = onnx.load(embedder.query_model_path.with_name("query.onnx"))
    weights = {tensor.name for tensor in exported.graph.initializer}
    linear = [
        node
        for node in exported.graph.node
        if node.op_type == "MatMul" and any(i in weights for i in node.input)
    ]
    assert len(linear) == 36  # six layers: query, key, value, output, two feed-forward
    quantized = onnx.load(embedder.query_model_path)
    integer = [node for node in quantized.graph.node if node.op_type == "MatMulInteger"]
    assert len(integer) == len(linear)


def test_long_query_is_truncated_like_torch(embedder: Embedder) -> None:
    long = "gene expression " * 200
    longer = long + "something else entirely that lies past token 256"
    assert embedder.max_tokens < len(embedder.token_offsets(long))
    np.testing.assert_array_equal(embedder.embed_query(long), embedder.embed_query(longer))


def test_queries_embed_concurrently_with_document_embedding(embedder: Embedder) -> None:
    expected = {q: embedder.embed_query(q) for q in QUERIES[:3]}
    errors: list[BaseException] = []

    def queries() -> None:
        try:
            for _ in range(20):
                for query, vector in expected.items():
                    np.testing.assert_array_equal(embedder.embed_query(query), vector)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=queries) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(3):
        embedder.embed_documents(PASSAGES)
        embedder.token_offsets(PASSAGES[0])
    for thread in threads:
        thread.join()
    assert errors == []


def test_files_are_cached_under_env_dir_and_made_again_when_damaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path))
    first = MiniLMEmbedder()
    path = first.query_model_path
    assert path.is_relative_to(tmp_path) and path.name == FILENAMES["int8"]
    assert not path.exists()  # made on first use, not when the embedder loads
    vector = first.embed_query("cached export")
    export = path.with_name("query.onnx")
    assert sorted(path.parent.iterdir()) == [path, export]  # no temporary file left behind
    mtimes = {p: p.stat().st_mtime_ns for p in (path, export)}

    second = MiniLMEmbedder()
    np.testing.assert_array_equal(second.embed_query("cached export"), vector)
    assert {p: p.stat().st_mtime_ns for p in (path, export)} == mtimes  # loaded, not made

    path.write_bytes(b"not an onnx model" * 1000)
    third = MiniLMEmbedder()
    with caplog.at_level(logging.WARNING, logger="ragstore.embed.onnx_query"):
        np.testing.assert_array_equal(third.embed_query("cached export"), vector)
    assert "making damaged query model" in caplog.text
    assert third.query_runtime == "onnxruntime"
    assert path.stat().st_size > 1_000_000  # the real model again
    assert export.stat().st_mtime_ns == mtimes[export]  # quantized again, not exported
    assert sorted(path.parent.iterdir()) == [path, export]

    fp32 = MiniLMEmbedder(query_precision="fp32")
    assert fp32.query_model_path == export
    export.write_bytes(b"truncated")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragstore.embed.onnx_query"):
        np.testing.assert_allclose(
            fp32.embed_query("cached export"), fp32.embed_documents(["cached export"])[0], atol=1e-5
        )
    assert "making damaged query model" in caplog.text


def test_processes_loading_at_once_make_the_files_once_and_all_use_them(tmp_path: Path) -> None:
    """A server's worker processes load the model together on an empty cache."""
    script = (
        "from ragstore.embed.local import MiniLMEmbedder\n"
        "e = MiniLMEmbedder()\n"
        "e.embed_query('warm up')\n"
        "print(e.query_runtime)\n"
    )
    env = {**os.environ, MODEL_CACHE_ENV: str(tmp_path), "HF_HUB_OFFLINE": "1"}
    loaders = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [loader.communicate(timeout=600) for loader in loaders]
    for loader, (out, err) in zip(loaders, outputs, strict=True):
        assert loader.returncode == 0, err
        assert out.strip() == "onnxruntime", err
        assert "runs on torch" not in err
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILENAMES.values())


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(InvalidConfig) as info:
        MiniLMEmbedder(query_precision="fp16")  # type: ignore[arg-type]
    assert info.value.field == "query_precision"


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


def test_the_default_model_takes_its_query_precision_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(QUERY_PRECISION_ENV, "fp32")
    loaded = load_default()
    assert isinstance(loaded, MiniLMEmbedder) and loaded.query_precision == "fp32"
    monkeypatch.setenv(QUERY_PRECISION_ENV, "fp16")
    with pytest.raises(InvalidConfig) as info:
        load_default()
    assert info.value.field == QUERY_PRECISION_ENV
