"""A LangChain ``VectorStore`` over a ragstore collection (``pip install 'ragstore[langchain]'``).

Without an ``Embeddings`` object the collection embeds texts and queries with its own
model; with one (for a collection created with ``embedder=None``) LangChain's model makes
the vectors and every search is dense. Search results are one per document, the
document's best-matching chunk, and ``similarity_search_with_score`` returns ragstore's
score for the mode that ran (higher is better): cosine similarity for ``dense``, the
fused score in [0, 1] for ``hybrid``, BM25 for ``keyword``.

Filters use ragstore's filter language (``docs/filters.md``), which is the MongoDB-style
dictionary other LangChain stores take: ``{"lang": "en", "year": {"$gte": 2020}}``,
``$and``, ``$or``, ``$not``; ``{"$between": [low, high]}`` is read as ``$gte`` and ``$lte``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Self, get_args

from ragstore.errors import InvalidConfig, InvalidFilter
from ragstore.integrations import AnyCollection, missing_extra, open_collection
from ragstore.types import Hit

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as error:
    raise missing_extra("langchain", error) from error

SearchMode = Literal["dense", "hybrid", "keyword"]

DEFAULT_COLLECTION: Final = "langchain"
FIELD_OPERATORS: Final = frozenset(
    {"$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists", "$between"}
)
COMBINATORS: Final = frozenset({"$and", "$or", "$not"})


class RagstoreVectorStore(VectorStore):
    """A LangChain vector store backed by a ragstore :class:`~ragstore.Collection`.

    ``embedding`` is LangChain's model for a collection of caller-supplied vectors;
    leave it out for a collection that embeds its own text. ``mode`` is how text queries
    run: ``dense`` (the default), ``hybrid`` (dense and BM25 fused; needs the
    collection's own model) or ``keyword``.
    """

    def __init__(
        self,
        collection: AnyCollection,
        embedding: Embeddings | None = None,
        *,
        mode: SearchMode = "dense",
    ) -> None:
        _check_collection(collection, embedding is not None)
        _check_mode(mode, embedding is not None)
        self.collection = collection
        self.mode: SearchMode = mode
        self._embedding = embedding

    @classmethod
    def open(
        cls,
        path: str | Path,
        collection_name: str = DEFAULT_COLLECTION,
        embedding: Embeddings | None = None,
        *,
        mode: SearchMode = "dense",
    ) -> Self:
        """The store over collection ``collection_name`` of the store at ``path`` (a
        directory or a ``postgresql://`` URL), created if needed: with ``embedding``, a
        collection of its vectors, their length measured with one ``embed_query``."""
        measure = None if embedding is None else lambda: len(embedding.embed_query("dimension"))
        return cls(open_collection(path, collection_name, measure), embedding, mode=mode)

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | Path = "./ragstore-data",
        collection_name: str = DEFAULT_COLLECTION,
        mode: SearchMode = "dense",
        **kwargs: Any,
    ) -> Self:
        """Open the store as :meth:`open` does and add ``texts`` to it."""
        if kwargs:
            raise TypeError(f"unexpected keyword arguments: {', '.join(kwargs)}")
        store = cls.open(path, collection_name, embedding, mode=mode)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @property
    def embeddings(self) -> Embeddings | None:
        """LangChain's model, or ``None`` when the collection embeds its own text."""
        return self._embedding

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Insert or replace texts; ids left out (or ``None``) are made up. Returns the ids."""
        texts = list(texts)
        given: Sequence[str | None] = ids or [None] * len(texts)
        metadatas = metadatas or [{} for _ in texts]
        if not len(given) == len(metadatas) == len(texts):
            raise ValueError(
                f"got {len(texts)} texts, {len(metadatas)} metadatas and {len(given)} ids"
            )
        made = [doc_id or str(uuid.uuid4()) for doc_id in given]
        records: list[dict[str, Any]] = [
            {"id": doc_id, "text": text, "metadata": metadata}
            for doc_id, text, metadata in zip(made, texts, metadatas, strict=True)
        ]
        if self._embedding is not None and texts:
            vectors = self._embedding.embed_documents(texts)
            for record, vector in zip(records, vectors, strict=True):
                record["vector"] = vector
        if records:
            self.collection.upsert(records)
        return made

    def delete(
        self,
        ids: list[str] | None = None,
        *,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Delete the documents ``ids``, or those matching ``filter``, or with neither,
        every document (LangChain's contract). Unknown ids are no error."""
        if ids is not None:
            if ids:
                self.collection.delete(list(ids))
        elif filter is not None:
            self.collection.delete(where=to_where(filter))
        else:
            self.collection.delete(all=True)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents ``ids``, whole, in that order; unknown ids left out."""
        if not ids:
            return []
        return [
            Document(id=doc.id, page_content=doc.text or "", metadata=doc.metadata or {})
            for doc in self.collection.get(list(ids))
        ]

    def similarity_search(
        self, query: str, k: int = 4, filter: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents that best match ``query`` (and ``filter``), best first.
        Further keywords go to :meth:`ragstore.Collection.search`."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """:meth:`similarity_search` with each document's ragstore score (higher is
        better; see the module's docstring)."""
        return [(_document(hit), hit.score) for hit in self._search(query, k, filter, kwargs)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """The ``k`` documents nearest to ``embedding`` (dense search), best first."""
        hits = self._search_vector(embedding, k, filter, kwargs)
        return [_document(hit) for hit in hits]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` of the ``fetch_k`` best matches, chosen for relevance and diversity by
        ragstore's maximal marginal relevance (``lambda_mult`` 1: relevance only)."""
        options = kwargs | {"candidates": max(fetch_k, k), "mmr_lambda": lambda_mult}
        return [_document(hit) for hit in self._search(query, k, filter, options)]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` for a query vector."""
        options = kwargs | {"candidates": max(fetch_k, k), "mmr_lambda": lambda_mult}
        return [_document(hit) for hit in self._search_vector(embedding, k, filter, options)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Map a score to [0, 1]: cosine similarity ``s`` to ``(1 + s) / 2``; the hybrid
        fused score is already there; BM25 has no fixed scale, so keyword mode has none."""
        if self.mode == "dense":
            return _cosine_relevance
        if self.mode == "hybrid":
            return float
        raise NotImplementedError(
            "BM25 scores have no fixed scale: relevance scores need mode 'dense' or 'hybrid'"
        )

    def _search(
        self, query: str, k: int, filter: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> list[Hit]:
        if self._embedding is not None and self.mode == "dense":
            return self._search_vector(self._embedding.embed_query(query), k, filter, options)
        where = None if filter is None else to_where(filter)
        return list(
            self.collection.search(
                query, k=k, where=where, mode=self.mode, group_by_doc=True, **options
            )
        )

    def _search_vector(
        self,
        vector: Sequence[float],
        k: int,
        filter: Mapping[str, Any] | None,
        options: dict[str, Any],
    ) -> list[Hit]:
        where = None if filter is None else to_where(filter)
        return list(
            self.collection.search(
                vector=list(vector), k=k, where=where, mode="dense", group_by_doc=True, **options
            )
        )


def to_where(filter: Mapping[str, Any]) -> dict[str, Any]:
    """A LangChain metadata filter as a ragstore filter: the same MongoDB-style language,
    with ``$between`` rewritten; an operator ragstore lacks raises :class:`InvalidFilter`."""
    if not isinstance(filter, Mapping):
        raise InvalidFilter(f"a filter is a dictionary, got {type(filter).__name__}")
    return {key: _translate(key, value) for key, value in filter.items()}


def _translate(key: str, value: Any) -> Any:
    if key in COMBINATORS:
        return to_where(value) if key == "$not" else [to_where(each) for each in value]
    if key.startswith("$"):
        raise _unsupported(key)
    if isinstance(value, Mapping):
        return _field(key, value)
    return value


def _field(name: str, operators: Mapping[str, Any]) -> dict[str, Any]:
    translated: dict[str, Any] = {}
    for op, operand in operators.items():
        if op not in FIELD_OPERATORS:
            raise _unsupported(op, name)
        if op == "$between":
            translated |= _between(name, operand)
        else:
            translated[op] = operand
    return translated


def _between(name: str, bounds: Any) -> dict[str, Any]:
    if not isinstance(bounds, list | tuple) or len(bounds) != 2:
        raise InvalidFilter(f"$between on field {name!r} needs [low, high]", field=name)
    return {"$gte": bounds[0], "$lte": bounds[1]}


def _unsupported(op: str, name: str | None = None) -> InvalidFilter:
    where = "" if name is None else f" on field {name!r}"
    supported = " ".join(sorted(FIELD_OPERATORS | COMBINATORS))
    return InvalidFilter(
        f"filter operator {op!r}{where} is not supported; ragstore supports {supported}",
        field=op,
    )


def _check_collection(collection: AnyCollection, caller_embeds: bool) -> None:
    config = collection.info().config
    if caller_embeds and config.embedder is not None:
        raise InvalidConfig(
            f"collection {collection.name!r} embeds its own text with {config.embedder}: "
            "use it without an embedding, or create one with embedder=None",
            field="embedding",
        )
    if not caller_embeds and config.embedder is None:
        raise InvalidConfig(
            f"collection {collection.name!r} holds caller-supplied vectors of length "
            f"{config.dim}: give the embedding that made them",
            field="embedding",
        )


def _check_mode(mode: str, caller_embeds: bool) -> None:
    if mode not in get_args(SearchMode):
        raise InvalidConfig(
            f"mode must be one of {', '.join(get_args(SearchMode))}, got {mode!r}", field="mode"
        )
    if mode == "hybrid" and caller_embeds:
        raise InvalidConfig(
            "hybrid search embeds the query with the collection's own model: "
            "use mode='dense' or 'keyword' with an embedding",
            field="mode",
        )


def _document(hit: Hit) -> Document:
    return Document(id=hit.doc_id, page_content=hit.text, metadata=hit.metadata)


def _cosine_relevance(score: float) -> float:
    return (1.0 + score) / 2.0


__all__ = ["RagstoreVectorStore", "SearchMode", "to_where"]
