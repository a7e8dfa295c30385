"""The LlamaIndex adapter, tested as LlamaIndex's own vector-store integrations test
theirs (llama-index-core ships no reusable suite): nodes with embeddings, metadata and
source documents are added, queried by embedding with filters, deleted by source
document, and served end to end through ``VectorStoreIndex``; then a collection that
embeds its own text with ragstore's model. Real stores on disk."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from server_helpers import remote_admin_store

import ragstore
from ragstore import InvalidFilter, InvalidInput
from ragstore.embed import Embedder
from ragstore.integrations.llamaindex import RagstoreVectorStore, to_where, unused_embed_model

BOOKS = [
    ("The Shawshank Redemption", "Stephen King", "Friendship", 1982, [1.0, 0.0, 0.0]),
    ("The Godfather", "Mario Puzo", "Mafia", 1969, [0.0, 1.0, 0.0]),
    ("Inception", "Christopher Nolan", "Fiction", 2010, [0.0, 0.0, 1.0]),
    ("It", "Stephen King", "Horror", 1986, [0.9, 0.1, 0.0]),
]


def book_nodes() -> list[TextNode]:
    """One node per book, each from source document ``doc-<year>``."""
    return [
        TextNode(
            id_=f"node-{i}",
            text=title,
            metadata={"author": author, "theme": theme, "year": year},
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{year}")},
            embedding=embedding,
        )
        for i, (title, author, theme, year, embedding) in enumerate(BOOKS)
    ]


@pytest.fixture(scope="module")
def remote_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ragstore.RemoteStore]:
    """A store on a real ragstore server on 127.0.0.1."""
    with remote_admin_store(tmp_path_factory.mktemp("llamaindex-remote")) as store:
        yield store


@pytest.fixture(params=["embedded", "remote"])
def books(tmp_path: Path, request: pytest.FixtureRequest) -> RagstoreVectorStore:
    """A collection of LlamaIndex's embeddings holding the books, in an embedded store
    or on a server."""
    if request.param == "embedded":
        vector_store = RagstoreVectorStore.open(tmp_path / "store", "books", dim=3)
    else:
        remote: ragstore.RemoteStore = request.getfixturevalue("remote_store")
        name = f"books-{uuid.uuid4().hex[:12]}"
        vector_store = RagstoreVectorStore(remote.create_collection(name, embedder=None, dim=3))
    assert vector_store.add(book_nodes()) == [f"node-{i}" for i in range(len(BOOKS))]
    return vector_store


def query(
    vector_store: RagstoreVectorStore, *filters: MetadataFilter, condition: str = "and"
) -> list[str]:
    """Ids of every book matching ``filters``, nearest to the first book first."""
    found = vector_store.query(
        VectorStoreQuery(
            query_embedding=[1.0, 0.0, 0.0],
            similarity_top_k=10,
            filters=MetadataFilters(filters=list(filters), condition=FilterCondition(condition)),
        )
    )
    return list(found.ids or [])


def test_query_by_embedding_returns_the_stored_nodes(books: RagstoreVectorStore) -> None:
    found = books.query(VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0], similarity_top_k=2))
    assert found.ids == ["node-0", "node-3"]
    assert found.similarities == pytest.approx([1.0, 0.9 / (0.82**0.5)])
    node = found.nodes[0] if found.nodes else None
    assert isinstance(node, TextNode)
    assert node.text == "The Shawshank Redemption"
    assert node.metadata == {"author": "Stephen King", "theme": "Friendship", "year": 1982}
    assert node.ref_doc_id == "doc-1982"


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        (FilterOperator.EQ, "Stephen King", ["node-0", "node-3"]),
        (FilterOperator.NE, "Stephen King", ["node-1", "node-2"]),
        (FilterOperator.GT, 1982, ["node-3", "node-2"]),
        (FilterOperator.GTE, 1982, ["node-0", "node-3", "node-2"]),
        (FilterOperator.LT, 1982, ["node-1"]),
        (FilterOperator.LTE, 1982, ["node-0", "node-1"]),
        (FilterOperator.IN, ["Mario Puzo", "Christopher Nolan"], ["node-1", "node-2"]),
        (FilterOperator.NIN, ["Mario Puzo", "Christopher Nolan"], ["node-0", "node-3"]),
    ],
)
def test_each_operator_filters(
    books: RagstoreVectorStore, operator: FilterOperator, value: object, expected: list[str]
) -> None:
    key = "year" if isinstance(value, int) else "author"
    filtered = query(books, MetadataFilter(key=key, value=value, operator=operator))
    assert filtered == expected


def test_conditions_combine_filters(books: RagstoreVectorStore) -> None:
    king = MetadataFilter(key="author", value="Stephen King")
    recent = MetadataFilter(key="year", value=1985, operator=FilterOperator.GT)
    assert query(books, king, recent) == ["node-3"]
    assert query(books, king, recent, condition="or") == ["node-0", "node-3", "node-2"]
    assert query(books, king, recent, condition="not") == ["node-1"]
    nested = MetadataFilters(
        filters=[king, MetadataFilters(filters=[recent], condition=FilterCondition.NOT)]
    )
    found = books.query(VectorStoreQuery(query_embedding=[1.0, 0, 0], filters=nested))
    assert found.ids == ["node-0"]


def test_an_unsupported_operator_is_named(books: RagstoreVectorStore) -> None:
    text_match = MetadataFilter(key="theme", value="Fic", operator=FilterOperator.TEXT_MATCH)
    with pytest.raises(InvalidFilter, match="TEXT_MATCH"):
        query(books, text_match)


def test_to_where() -> None:
    assert to_where(None) is None
    assert to_where(MetadataFilters(filters=[])) is None
    either = MetadataFilters(
        filters=[
            MetadataFilter(key="tags", value=["a", "b"], operator=FilterOperator.ANY),
            MetadataFilter(key="tags", value="c", operator=FilterOperator.CONTAINS),
        ],
        condition=FilterCondition.OR,
    )
    assert to_where(either) == {"$or": [{"tags": {"$in": ["a", "b"]}}, {"tags": {"$eq": "c"}}]}


def test_delete_by_source_document(books: RagstoreVectorStore) -> None:
    books.delete("doc-1982")
    assert query(books) == ["node-3", "node-1", "node-2"]


def test_delete_nodes_by_id_and_filter(books: RagstoreVectorStore) -> None:
    king = MetadataFilters(filters=[MetadataFilter(key="author", value="Stephen King")])
    books.delete_nodes(["node-0", "node-1"], filters=king)
    assert query(books) == ["node-3", "node-1", "node-2"]
    books.delete_nodes(filters=king)
    assert query(books) == ["node-1", "node-2"]
    books.delete_nodes(["node-2"])
    assert query(books) == ["node-1"]
    books.clear()
    assert books.client.count() == 0


def test_get_nodes_round_trips(books: RagstoreVectorStore) -> None:
    nodes = books.get_nodes(["node-2", "node-0", "missing"])
    assert [(n.node_id, n.get_content()) for n in nodes] == [
        ("node-2", "Inception"),
        ("node-0", "The Shawshank Redemption"),
    ]
    king = MetadataFilters(filters=[MetadataFilter(key="author", value="Stephen King")])
    assert [n.node_id for n in books.get_nodes(filters=king)] == ["node-0", "node-3"]
    assert len(books.get_nodes()) == len(BOOKS)


def test_doc_ids_restrict_a_query(books: RagstoreVectorStore) -> None:
    found = books.query(
        VectorStoreQuery(
            query_embedding=[1.0, 0, 0], similarity_top_k=5, doc_ids=["doc-1969", "doc-2010"]
        )
    )
    assert found.ids == ["node-1", "node-2"]


def test_vector_store_index_end_to_end(books: RagstoreVectorStore) -> None:
    index = VectorStoreIndex.from_vector_store(books, embed_model=MockEmbedding(embed_dim=3))
    retrieved = index.as_retriever(similarity_top_k=2).retrieve("anything")
    assert len(retrieved) == 2
    king = MetadataFilters(filters=[MetadataFilter(key="author", value="Stephen King")])
    filtered = index.as_retriever(similarity_top_k=5, filters=king).retrieve("anything")
    assert sorted(hit.node.node_id for hit in filtered) == ["node-0", "node-3"]
    with pytest.raises(InvalidInput, match="hybrid"):
        index.as_retriever(vector_store_query_mode="hybrid").retrieve("anything")


@pytest.fixture(scope="module")
def faq_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> VectorStoreIndex:
    """An index over a collection that embeds its own text with ragstore's model."""
    vector_store = RagstoreVectorStore.open(tmp_path_factory.mktemp("faq") / "store")
    context = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex([], storage_context=context, embed_model=unused_embed_model())
    index.insert_nodes(
        [
            TextNode(id_="refunds", text="Refunds are accepted within 30 days of purchase."),
            TextNode(id_="office", text="Our head office is in Lisbon, near the river."),
            TextNode(id_="hours", text="Support answers the phone from 9am to 5pm."),
            TextNode(id_="shipping", text="Orders ship within two days by courier."),
        ]
    )
    return index


def ids_for(index: VectorStoreIndex, question: str, **options: object) -> list[str]:
    return [hit.node.node_id for hit in index.as_retriever(**options).retrieve(question)]


def test_a_text_collection_embeds_nodes_and_queries_itself(faq_index: VectorStoreIndex) -> None:
    vector_store = faq_index.vector_store
    assert isinstance(vector_store, RagstoreVectorStore)
    assert not vector_store.is_embedding_query
    assert ids_for(faq_index, "where are you located?", similarity_top_k=1) == ["office"]
    assert ids_for(faq_index, "can I get my money back?", similarity_top_k=1) == ["refunds"]


def test_query_modes_on_a_text_collection(faq_index: VectorStoreIndex) -> None:
    hybrid = ids_for(faq_index, "courier", vector_store_query_mode="hybrid", similarity_top_k=2)
    assert hybrid[0] == "shipping"
    keyword = ids_for(faq_index, "Lisbon", vector_store_query_mode="text_search")
    assert keyword == ["office"]
    mmr = ids_for(faq_index, "support", vector_store_query_mode="mmr", similarity_top_k=3)
    assert len(set(mmr)) == 3
    with pytest.raises(InvalidInput, match="svm"):
        faq_index.vector_store.query(VectorStoreQuery(query_str="x", mode=VectorStoreQueryMode.SVM))


def test_documents_ragstore_ingested_come_back_as_text_nodes(
    tmp_path: Path, embedder: Embedder
) -> None:
    collection = ragstore.open(tmp_path / "store").collection("docs", embedder=embedder)
    collection.upsert([{"id": "a", "text": "Refunds within 30 days.", "metadata": {"n": 1}}])
    found = RagstoreVectorStore(collection).query(
        VectorStoreQuery(query_str="refund policy", similarity_top_k=1)
    )
    assert found.nodes == [TextNode(id_="a", text="Refunds within 30 days.", metadata={"n": 1})]


def test_a_missing_llama_index_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['llama_index'] = None\nimport ragstore.integrations.llamaindex\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert ran.returncode == 1
    assert "pip install 'ragstore[llamaindex]'" in ran.stderr
