"""The LangChain adapter: LangChain's own standard vector-store tests (their 6-dimensional
fake embedding, so a collection of caller-supplied vectors), then ragstore's own model
behind LangChain's interface, on real stores on disk."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests
from server_helpers import remote_admin_store

import ragstore
from ragstore import InvalidConfig, InvalidFilter
from ragstore.embed import Embedder
from ragstore.integrations.langchain import RagstoreVectorStore, to_where

FAQ = {
    "refunds": ("Refunds are accepted within 30 days of purchase.", "returns", 2021),
    "exchange": ("You may exchange an unworn item for another size.", "returns", 2023),
    "shipping": ("Orders ship within two business days by courier.", "shipping", 2022),
    "office": ("Our head office is in Lisbon, near the river.", "about", 2019),
    "hours": ("Support answers the phone from 9am to 5pm on weekdays.", "about", 2024),
}
TEXTS = [text for text, _, _ in FAQ.values()]
METADATAS = [{"topic": topic, "year": year} for _, topic, year in FAQ.values()]


class TestStandardInterface(VectorStoreIntegrationTests):
    """LangChain's published interface tests, unchanged."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path) -> VectorStore:
        return RagstoreVectorStore.open(tmp_path / "store", embedding=self.get_embeddings())


@pytest.fixture(scope="module")
def remote_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ragstore.RemoteStore]:
    """A store on a real ragstore server on 127.0.0.1."""
    with remote_admin_store(tmp_path_factory.mktemp("langchain-remote")) as store:
        yield store


class TestStandardInterfaceOverARemoteCollection(VectorStoreIntegrationTests):
    """The same published tests, over a collection on a ragstore server."""

    @pytest.fixture
    def vectorstore(self, remote_store: ragstore.RemoteStore) -> VectorStore:
        name = f"lc-{uuid.uuid4().hex[:12]}"
        dim = len(self.get_embeddings().embed_query("dimension"))
        collection = remote_store.create_collection(name, embedder=None, dim=dim)
        return RagstoreVectorStore(collection, self.get_embeddings())


@pytest.fixture(scope="module")
def faq(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> RagstoreVectorStore:
    """The FAQ in a collection that embeds its own text with ragstore's model."""
    return RagstoreVectorStore.from_texts(
        TEXTS,
        metadatas=METADATAS,
        ids=list(FAQ),
        path=tmp_path_factory.mktemp("faq") / "store",
        collection_name="faq",
    )


def ids(documents: list[Document]) -> list[str | None]:
    return [doc.id for doc in documents]


def test_without_an_embedding_the_collection_embeds_with_its_own_model(
    faq: RagstoreVectorStore,
) -> None:
    assert faq.embeddings is None
    assert faq.collection.info().config.embedder == "sentence-transformers/all-MiniLM-L6-v2"
    found = faq.similarity_search("can I get my money back?", k=2)
    assert found[0] == Document(id="refunds", page_content=TEXTS[0], metadata=METADATAS[0])
    assert len(found) == 2


def test_scores_are_ragstores_and_relevance_maps_them_into_zero_to_one(
    faq: RagstoreVectorStore,
) -> None:
    scored = faq.similarity_search_with_score("where is your office?", k=5)
    assert scored[0][0].id == "office"
    scores = [score for _, score in scored]
    assert scores == sorted(scores, reverse=True)
    relevance = faq.similarity_search_with_relevance_scores("where is your office?", k=5)
    assert [doc.id for doc, _ in relevance] == [doc.id for doc, _ in scored]
    assert [r for _, r in relevance] == pytest.approx([(1 + s) / 2 for s in scores])


def test_hybrid_and_keyword_modes(faq: RagstoreVectorStore) -> None:
    hybrid = RagstoreVectorStore(faq.collection, mode="hybrid")
    scored = hybrid.similarity_search_with_relevance_scores("courier shipping days", k=3)
    assert scored[0][0].id == "shipping"
    assert all(0.0 <= score <= 1.0 for _, score in scored)
    keyword = RagstoreVectorStore(faq.collection, mode="keyword")
    assert ids(keyword.similarity_search("Lisbon", k=3)) == ["office"]
    with pytest.raises(NotImplementedError, match="BM25"):
        keyword.similarity_search_with_relevance_scores("Lisbon", k=3)


def test_filters_translate_to_ragstores_language(faq: RagstoreVectorStore) -> None:
    returns = faq.similarity_search("anything", k=5, filter={"topic": "returns"})
    assert sorted(ids(returns)) == ["exchange", "refunds"]
    recent = faq.similarity_search("anything", k=5, filter={"year": {"$between": [2022, 2023]}})
    assert sorted(ids(recent)) == ["exchange", "shipping"]
    either = {"$or": [{"topic": {"$eq": "shipping"}}, {"year": {"$lt": 2020}}]}
    assert sorted(ids(faq.similarity_search("anything", k=5, filter=either))) == [
        "office",
        "shipping",
    ]
    with pytest.raises(InvalidFilter, match=r"'\$like'"):
        faq.similarity_search("anything", filter={"topic": {"$like": "ret%"}})


def test_to_where_passes_ragstores_operators_and_rewrites_between() -> None:
    assert to_where({"a": 1, "$not": {"b": {"$in": [1, 2]}}}) == {
        "a": 1,
        "$not": {"b": {"$in": [1, 2]}},
    }
    assert to_where({"$and": [{"n": {"$between": [1, 5], "$ne": 3}}]}) == {
        "$and": [{"n": {"$gte": 1, "$lte": 5, "$ne": 3}}]
    }
    with pytest.raises(InvalidFilter, match=r"'\$contain'"):
        to_where({"$contain": "x"})
    with pytest.raises(InvalidFilter, match="low, high"):
        to_where({"n": {"$between": [1]}})


def test_retrievers(faq: RagstoreVectorStore) -> None:
    plain = faq.as_retriever(search_kwargs={"k": 1, "filter": {"topic": "about"}})
    assert ids(plain.invoke("when can I call support?")) == ["hours"]
    threshold = faq.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.7, "k": 5}
    )
    kept = threshold.invoke("refunds within 30 days")
    assert ids(kept)[0] == "refunds"
    assert len(kept) < len(FAQ)
    mmr = faq.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 5})
    diverse = mmr.invoke("returns and refunds")
    assert len(set(ids(diverse))) == 3


def test_long_texts_give_one_hit_per_document(tmp_path: Path, embedder: Embedder) -> None:
    long = " ".join(f"Paragraph {n} is about refunds and returns." for n in range(200))
    vectors = RagstoreVectorStore.from_texts(
        [long, FAQ["office"][0]], ids=["long", "office"], path=tmp_path / "store"
    )
    assert vectors.collection.info().chunks > 2
    found = vectors.similarity_search("refunds", k=5)
    assert ids(found) == ["long", "office"]
    assert found[0].page_content in long
    assert vectors.get_by_ids(["long"])[0].page_content == long


def test_delete_by_filter_and_everything(tmp_path: Path, embedder: Embedder) -> None:
    vectors = RagstoreVectorStore.from_texts(
        TEXTS, metadatas=METADATAS, ids=list(FAQ), path=tmp_path / "store"
    )
    assert vectors.delete(filter={"topic": "about"})
    assert sorted(d.id for d in vectors.get_by_ids(list(FAQ))) == [
        "exchange",
        "refunds",
        "shipping",
    ]
    assert vectors.delete()
    assert vectors.collection.count() == 0


def test_reopening_by_path_finds_the_same_documents(tmp_path: Path) -> None:
    fake = DeterministicFakeEmbedding(size=6)
    RagstoreVectorStore.from_texts(["alpha", "beta"], fake, ids=["a", "b"], path=tmp_path / "s")
    again = RagstoreVectorStore.open(tmp_path / "s", embedding=fake)
    assert ids(again.similarity_search("beta", k=2)) == ["b", "a"]
    assert ids(again.similarity_search_by_vector(fake.embed_query("alpha"), k=1)) == ["a"]


def test_the_embedding_must_match_the_collection(tmp_path: Path) -> None:
    store = ragstore.open(tmp_path / "store")
    text = store.create_collection("text")
    vectors = store.create_collection("vectors", embedder=None, dim=6)
    fake = DeterministicFakeEmbedding(size=6)
    with pytest.raises(InvalidConfig, match="embeds its own text"):
        RagstoreVectorStore(text, fake)
    with pytest.raises(InvalidConfig, match="caller-supplied vectors"):
        RagstoreVectorStore(vectors)
    with pytest.raises(InvalidConfig, match="hybrid"):
        RagstoreVectorStore(vectors, fake, mode="hybrid")
    with pytest.raises(InvalidConfig, match="mode must be one of"):
        RagstoreVectorStore(text, mode="fuzzy")  # type: ignore[arg-type]


def test_a_missing_langchain_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['langchain_core'] = None\n"
        "import ragstore\n"
        "loaded = [m for m, module in sys.modules.items() if module is not None]\n"
        "assert not [m for m in loaded if m.startswith(('langchain', 'llama_index'))]\n"
        "import ragstore.integrations.langchain\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert ran.returncode == 1
    assert "pip install 'ragstore[langchain]'" in ran.stderr
