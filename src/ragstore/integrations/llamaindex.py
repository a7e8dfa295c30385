"""A LlamaIndex vector store over a ragstore collection (``pip install 'ragstore[llamaindex]'``).

Over a collection that embeds its own text, LlamaIndex's embeddings are not used: ragstore
embeds each node's text on ``add`` and the query text at search (so LlamaIndex need not
embed queries, and :func:`unused_embed_model` stands in for its model). Over a collection
created with ``embedder=None``, nodes carry LlamaIndex's embeddings and queries are
searched by LlamaIndex's query embedding.

Query modes: ``default`` is dense search, ``hybrid`` fuses dense and BM25 (``alpha``
weighs the dense side), ``text_search`` and ``sparse`` are BM25, ``mmr`` reorders dense
results by maximal marginal relevance (``mmr_threshold`` is its lambda). Similarities are
ragstore's scores (higher is better). ``MetadataFilters`` become ragstore filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from ragstore.errors import InvalidFilter, InvalidInput
from ragstore.integrations import AnyCollection, missing_extra, open_collection
from ragstore.types import Hit, StoredDocument

try:
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.embeddings import MockEmbedding
    from llama_index.core.schema import BaseNode, MetadataMode, TextNode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as error:
    raise missing_extra("llamaindex", error) from error

DEFAULT_COLLECTION: Final = "llama_index"
OPERATORS: Final = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
    FilterOperator.ANY: "$in",
    FilterOperator.CONTAINS: "$eq",
}
"""LlamaIndex's filter operators that ragstore has. ``any`` and ``contains`` hold for an
array field through ragstore's any-element rule."""
NODE_CONTENT: Final = "_node_content"
"""The metadata key under which LlamaIndex keeps a node's own fields."""
PAGE: Final = 1000


class RagstoreVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by a ragstore :class:`~ragstore.Collection`.

    Nodes are documents of the collection (the node id is the document id); their
    metadata, with LlamaIndex's own fields (``ref_doc_id``, ``_node_content``…), is the
    document's metadata. Documents that ragstore ingested itself come back as plain
    text nodes.
    """

    stores_text: bool = True

    _collection: AnyCollection = PrivateAttr()
    _embeds_text: bool = PrivateAttr()

    def __init__(self, collection: AnyCollection) -> None:
        embeds_text = collection.info().config.embedder is not None
        super().__init__(stores_text=True, is_embedding_query=not embeds_text)
        self._collection = collection
        self._embeds_text = embeds_text

    @classmethod
    def open(
        cls, path: str | Path, collection_name: str = DEFAULT_COLLECTION, *, dim: int | None = None
    ) -> RagstoreVectorStore:
        """The store over collection ``collection_name`` of the store at ``path``, created
        if needed: one that embeds its own text, or with ``dim``, one that holds
        LlamaIndex's embeddings of that length."""
        measure = None if dim is None else lambda: dim
        return cls(open_collection(path, collection_name, measure))

    @classmethod
    def class_name(cls) -> str:
        """LlamaIndex's name for this component."""
        return "RagstoreVectorStore"

    @property
    def client(self) -> AnyCollection:
        """The ragstore collection."""
        return self._collection

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Insert or replace ``nodes``; returns their ids."""
        records = [self._record(node) for node in nodes]
        if records:
            self._collection.upsert(records)
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete the nodes of source document ``ref_doc_id``."""
        self._collection.delete(where={"ref_doc_id": ref_doc_id})

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes ``node_ids`` that match ``filters`` (either may be left out;
        with neither, nothing is deleted)."""
        where = to_where(filters)
        if node_ids is not None and where is not None:
            node_ids = [doc.id for doc in self._collection.get(node_ids, where=where)]
        if node_ids:
            self._collection.delete(node_ids)
        elif node_ids is None and where is not None:
            self._collection.delete(where=where)

    def clear(self) -> None:
        """Delete every node."""
        self._collection.delete(all=True)

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The nodes ``node_ids`` (in that order), or every node, that match ``filters``."""
        where = to_where(filters)
        if node_ids is not None:
            found = self._collection.get(node_ids, where=where) if node_ids else []
            return [_stored_node(doc) for doc in found]
        return [_stored_node(doc) for doc in self._listing(where)]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` best nodes for ``query``, one per node, best first."""
        hits = self._collection.search(**self._search_arguments(query))
        return VectorStoreQueryResult(
            nodes=[_hit_node(hit) for hit in hits],
            similarities=[hit.score for hit in hits],
            ids=[hit.doc_id for hit in hits],
        )

    def _record(self, node: BaseNode) -> dict[str, Any]:
        metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
        record: dict[str, Any] = {
            "id": node.node_id,
            "text": node.get_content(metadata_mode=MetadataMode.NONE),
            "metadata": metadata,
        }
        if not self._embeds_text:
            record["vector"] = node.get_embedding()
        return record

    def _listing(self, where: dict[str, Any] | None) -> list[StoredDocument]:
        found: list[StoredDocument] = []
        page = self._collection.get(where=where, limit=PAGE)
        found.extend(page)
        while page.next_cursor is not None:
            page = self._collection.get(where=where, limit=PAGE, cursor=page.next_cursor)
            found.extend(page)
        return found

    def _search_arguments(self, query: VectorStoreQuery) -> dict[str, Any]:
        if query.node_ids:
            raise InvalidInput("a query restricted to node_ids is not supported", field="node_ids")
        arguments = _mode_arguments(query) | {
            "k": query.similarity_top_k,
            "where": _query_where(query),
            "group_by_doc": True,
        }
        if arguments["mode"] == "hybrid" and not self._embeds_text:
            raise InvalidInput(
                "hybrid search embeds the query with the collection's own model; this "
                "collection holds LlamaIndex's embeddings",
                field="mode",
            )
        if arguments["mode"] == "keyword" or (self._embeds_text and query.query_str):
            arguments["query"] = _query_text(query)
        else:
            arguments["vector"] = _query_vector(query)
        return arguments


def unused_embed_model() -> MockEmbedding:
    """An embed model for LlamaIndex over a collection that embeds its own text: LlamaIndex
    insists on one, this one computes nothing, and ragstore ignores what it returns."""
    return MockEmbedding(embed_dim=1)


def to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex's metadata filters as a ragstore filter (``None`` for none). An operator
    ragstore lacks (``text_match``, ``all``, ``is_empty``…) raises :class:`InvalidFilter`."""
    if filters is None:
        return None
    parts = [part for part in map(_part, filters.filters) if part]
    if not parts:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    return {"$not": {"$or": parts}}  # NOT: none of them holds, as LlamaIndex reads it


def _part(each: MetadataFilter | MetadataFilters) -> dict[str, Any]:
    if isinstance(each, MetadataFilters):
        return to_where(each) or {}
    op = OPERATORS.get(each.operator)
    if op is None:
        supported = ", ".join(sorted({operator.name for operator in OPERATORS}))
        raise InvalidFilter(
            f"filter operator {each.operator.name} ({each.operator.value!r}) on {each.key!r} "
            f"is not supported; ragstore supports {supported}",
            field=each.key,
        )
    return {each.key: {op: each.value}}


_MODES: Final = {
    VectorStoreQueryMode.DEFAULT: "dense",
    VectorStoreQueryMode.MMR: "dense",
    VectorStoreQueryMode.HYBRID: "hybrid",
    VectorStoreQueryMode.TEXT_SEARCH: "keyword",
    VectorStoreQueryMode.SPARSE: "keyword",
}


def _mode_arguments(query: VectorStoreQuery) -> dict[str, Any]:
    mode = _MODES.get(query.mode)
    if mode is None:
        raise InvalidInput(f"query mode {query.mode.value!r} is not supported", field="mode")
    arguments: dict[str, Any] = {"mode": mode}
    if query.mode == VectorStoreQueryMode.MMR:
        arguments["mmr_lambda"] = 0.5 if query.mmr_threshold is None else query.mmr_threshold
    if mode == "hybrid" and query.alpha is not None:
        arguments["alpha"] = query.alpha
    return arguments


def _query_where(query: VectorStoreQuery) -> dict[str, Any] | None:
    parts = [to_where(query.filters)]
    if query.doc_ids:
        parts.append({"ref_doc_id": {"$in": list(query.doc_ids)}})
    present = [part for part in parts if part is not None]
    return None if not present else present[0] if len(present) == 1 else {"$and": present}


def _query_text(query: VectorStoreQuery) -> str:
    if not query.query_str:
        raise InvalidInput("this search needs the query text", field="query_str")
    return query.query_str


def _query_vector(query: VectorStoreQuery) -> list[float]:
    if query.query_embedding is None:
        raise InvalidInput("this search needs the query embedding", field="query_embedding")
    return query.query_embedding


def _node(doc_id: str, text: str, metadata: dict[str, Any]) -> BaseNode:
    if NODE_CONTENT not in metadata:
        return TextNode(id_=doc_id, text=text, metadata=metadata)
    return metadata_dict_to_node(metadata, text)


def _hit_node(hit: Hit) -> BaseNode:
    return _node(hit.doc_id, hit.text, hit.metadata)


def _stored_node(doc: StoredDocument) -> BaseNode:
    return _node(doc.id, doc.text or "", doc.metadata or {})


__all__ = ["RagstoreVectorStore", "to_where", "unused_embed_model"]
