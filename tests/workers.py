"""Worker processes for the multi-process tests: ``python workers.py ROLE STORE ARGS``.

Each worker exits 0 only if every operation it made succeeded and every check held.
"""

from __future__ import annotations

import sys
import time

import numpy as np

import ragstore

BATCH = 5
DIM = 16


def writer(store_path: str, prefix: str, batches: int) -> None:
    """Upsert ``batches`` batches of BATCH vectors, each batch in one call, deleting some."""
    col = ragstore.open(store_path).get_collection("vecs")
    rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
    for b in range(batches):
        records = [
            {
                "id": f"{prefix}-{b}-{i}",
                "vector": rng.normal(size=DIM).tolist(),
                "metadata": {"batch": f"{prefix}-{b}"},
            }
            for i in range(BATCH)
        ]
        col.upsert(records)
        if b % 10 == 9:  # delete a whole earlier batch in one statement
            col.delete(where={"batch": f"{prefix}-{b - 5}"})


def reader(store_path: str, seconds: float) -> None:
    """Search and count while writers run; a batch is only ever seen whole or not at all."""
    col = ragstore.open(store_path).get_collection("vecs")
    rng = np.random.default_rng(1)
    deadline = time.monotonic() + seconds
    checks = 0
    while time.monotonic() < deadline:
        hits = col.search(vector=rng.normal(size=DIM), k=10)
        for batch in {hit.metadata["batch"] for hit in hits}:
            seen = col.count(where={"batch": batch})
            if seen not in (0, BATCH):
                sys.exit(f"reader saw {seen} of {BATCH} documents of batch {batch}")
            checks += 1
    if checks == 0:
        sys.exit("reader made no checks")


def rebuilder(store_path: str) -> None:
    """Rebuild the index of collection ``ann`` over and over, switching kinds, until killed."""
    col = ragstore.open(store_path).get_collection("ann")
    while True:
        for kind in ("hnsw", "ivf", "sq8", "binary"):
            col.rebuild_index({"kind": kind})


def appender(store_path: str) -> None:
    """Append batches of BATCH vectors to ``vecs``, batch ``b`` holding ids ``b-0`` to
    ``b-4``, one transaction each, until killed."""
    col = ragstore.open(store_path).get_collection("vecs")
    rng = np.random.default_rng(3)
    for b in range(10**9):
        vectors = rng.normal(size=(BATCH, DIM)).astype(np.float32)
        ids = [f"{b}-{i}" for i in range(BATCH)]
        col.upsert_vectors(ids, vectors, [{"batch": b}] * BATCH)


def alias_flipper(store_path: str, flips: int) -> None:
    """Switch alias ``docs`` between ``v1`` and ``v2`` ``flips`` times, ending on ``v2``."""
    with ragstore.open(store_path) as store:
        for flip in range(flips):
            store.set_alias("docs", "v2" if (flips - flip) % 2 else "v1")
            time.sleep(0.02)


if __name__ == "__main__":
    role, path, *rest = sys.argv[1:]
    if role == "writer":
        writer(path, rest[0], int(rest[1]))
    elif role == "rebuilder":
        rebuilder(path)
    elif role == "alias-flipper":
        alias_flipper(path, int(rest[0]))
    elif role == "appender":
        appender(path)
    elif role == "upsert-basis":  # ids given: each gets that standard basis vector
        with ragstore.open(path) as store:
            ids = [int(i) for i in rest]
            store.get_collection("vecs").upsert_vectors(
                [str(i) for i in ids], np.eye(DIM, dtype=np.float32)[ids]
            )
    elif role == "optimize":
        with ragstore.open(path) as store:
            store.get_collection("ann").optimize()
    else:
        reader(path, float(rest[0]))
