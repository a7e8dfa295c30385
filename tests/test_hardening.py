"""Bad input never becomes a traceback, a hang or lost data: the Python API raises
``InvalidInput`` (or another ``RagstoreError``), the CLI exits 2 (bad input) or 1 (the
store cannot do it) with one line, and nothing already stored is lost by a failed run.

Each test names the observation it pins down."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import RAGSTORE_BIN

import ragstore
from ragstore import InvalidFilter, InvalidInput, StoreError

SETPRIV = shutil.which("setpriv")


def run(store: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process (arguments may hold undecodable bytes as surrogates)."""
    return subprocess.run(
        [RAGSTORE_BIN, "--store", str(store), *args],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].lower().startswith(("error:", "usage:")), result.stderr


def run_bound_by_permissions(*command: str) -> subprocess.CompletedProcess[str]:
    """``command`` run as root but bound by file permissions, as any other user is."""
    assert SETPRIV is not None
    return subprocess.run(
        [SETPRIV, "--bounding-set", "-dac_override,-dac_read_search", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def vectors(store: ragstore.Store) -> ragstore.Collection:
    col = store.create_collection("v", embedder=None, dim=4)
    ids = ["a", "b", "c", "abc"]
    col.upsert_vectors(ids, np.eye(4, dtype=np.float32), [{"n": i} for i in range(4)])
    return col


# --- data loss -----------------------------------------------------------------------


@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")
def test_1_sync_keeps_the_documents_of_an_unreadable_folder(tmp_path: Path) -> None:
    docs, store = tmp_path / "docs", tmp_path / "store"
    (docs / "private").mkdir(parents=True)
    (docs / "a.txt").write_text("The refund policy allows thirty days.")
    (docs / "private" / "b.txt").write_text("Salaries are reviewed every spring.")
    assert run(store, "ingest", str(docs)).returncode == 0
    (docs / "private").chmod(0)
    try:
        command = [RAGSTORE_BIN, "--store", str(store), "ingest", str(docs), "--sync", "--json"]
        result = run_bound_by_permissions(*command)
    finally:
        (docs / "private").chmod(0o755)
    assert result.returncode == 3, result.stderr  # a skip for a problem
    report = json.loads(result.stdout)
    assert report["documents_deleted"] == 0
    assert any("private: cannot list folder" in error for error in report["errors"])
    with ragstore.open(store) as opened:
        assert [d.id for d in opened.get_collection("default").get(["private/b.txt"])] == [
            "private/b.txt"
        ]


def test_2_a_string_id_is_one_id(vectors: ragstore.Collection) -> None:
    assert [d.id for d in vectors.get("abc")] == ["abc"]
    assert vectors.delete("abc") == 1
    assert sorted(d.id for d in vectors.get(["a", "b", "c", "abc"])) == ["a", "b", "c"]
    with pytest.raises(InvalidInput, match=r"ids\[1\] must be a string"):
        vectors.get(["a", 1])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="ids must be an id or a list"):
        vectors.delete({"a": 1})  # type: ignore[arg-type]
    assert vectors.count() == 3


def test_3_a_file_name_that_is_not_utf8_is_skipped_and_the_rest_stored(
    tmp_path: Path, store: ragstore.Store
) -> None:
    folder = tmp_path / "n"
    folder.mkdir()
    (folder / "ok.txt").write_text("A perfectly ordinary file.")
    with open(os.fsencode(folder) + b"/caf\xe9.txt", "wb") as bad:
        bad.write(b"Coffee notes.")
    report = store.collection("c").ingest([folder])
    assert report.documents_added == 1 and report.documents_skipped == 1
    assert report.errors == [
        "caf\\udce9.txt: path is not valid UTF-8: rename it to ingest the file"
    ]
    assert [d.id for d in store.get_collection("c").get(["ok.txt"])] == ["ok.txt"]


# --- the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["query", "x", "--filter", '{"a": ' * 600 + "1" + "}" * 600], 2),
        (["query", "x", "--filter", '{"$and": [' * 600 + "{}" + "]}" * 600], 2),
        (["query", os.fsdecode(b"\xff\xfe")], 2),
        (["get", os.fsdecode(b"\xff")], 2),
        (["--collection", os.fsdecode(b"\xff"), "ingest", "."], 2),
        (["serve", "--port", "99999"], 2),
        (["cache", "--redis", "redis://127.0.0.1:1/0", "stats"], 1),
        (["delete"], 2),
        (["delete", "--filter", "{}"], 2),
        (["delete", "a", "--all"], 2),
    ],
    ids=[
        "deep-filter",
        "deep-and",
        "query-bytes",
        "get-bytes",
        "collection-bytes",
        "port",
        "redis-down",
        "delete-nothing",
        "delete-empty-filter",
        "delete-ids-and-all",
    ],
)
def test_7_bad_cli_input_is_one_line_and_an_exit_code(
    tmp_path: Path, args: list[str], code: int
) -> None:
    store = tmp_path / "store"
    with ragstore.open(store) as opened:
        col = opened.create_collection("default", embedder=None, dim=2)
        col.upsert([{"id": "a", "vector": [1, 0]}])
    assert_one_line_error(run(store, *args), code)
    with ragstore.open(store) as opened:
        assert opened.get_collection("default").count() == 1  # nothing was deleted


def test_7_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert_one_line_error(run(tmp_path / "store", "ingest", str(tmp_path / "loop")), 2)


@pytest.mark.parametrize(
    ("where", "code", "message"),
    [
        ("/dev/null", 1, "cannot open a store at /dev/null: it is not a directory"),
        ("/proc/nope", 1, "no store at /proc/nope: `ragstore ingest PATH...` makes one"),
        ("/etc/passwd", 2, "Directory '/etc/passwd' is a file"),
    ],
)
def test_7_a_store_that_cannot_be_opened_is_one_line(where: str, code: int, message: str) -> None:
    result = run(Path(where), "count")
    assert_one_line_error(result, code)
    assert message in result.stderr


@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")
def test_7_a_store_directory_without_write_permission_is_exit_1(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir(mode=0o555)
    (tmp_path / "a.txt").write_text("text")
    command = [RAGSTORE_BIN, "--store", str(store), "ingest", str(tmp_path / "a.txt")]
    result = run_bound_by_permissions(*command)
    assert_one_line_error(result, 1)
    assert "cannot open a store" in result.stderr


@pytest.mark.skipif(SETPRIV is None, reason="needs setpriv (util-linux)")
def test_7_a_read_only_store_refuses_writes_with_a_store_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with ragstore.open(store) as opened:
        opened.create_collection("c", embedder=None, dim=2).upsert([{"id": "a", "vector": [1, 0]}])
    for path in store.iterdir():
        path.chmod(0o444)
    script = (
        "import ragstore\n"
        f"col = ragstore.open({str(store)!r}).get_collection('c')\n"
        "try:\n"
        "    col.upsert([{'id': 'b', 'vector': [0, 1]}])\n"
        "except ragstore.StoreError as error:\n"
        "    print('StoreError:', error)\n"
    )
    python = str(Path(RAGSTORE_BIN).with_name("python"))
    result = run_bound_by_permissions(python, "-c", script)
    assert result.returncode == 0, result.stderr
    assert "StoreError: the store cannot be written" in result.stdout


def test_8_ingesting_a_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "f.txt"
    os.mkfifo(fifo)
    result = run(tmp_path / "store", "ingest", str(fifo), "--json", timeout=60)
    assert result.returncode == 3, result.stderr  # a skip for a problem
    report = json.loads(result.stdout)
    assert report["documents_skipped"] == 1
    assert report["errors"] == ["f.txt: not a regular file (a folder, FIFO, socket or device)"]


# --- the Python API ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", "/dev/null"])
def test_9_opening_something_that_is_not_a_store_is_a_store_error(path: str) -> None:
    with pytest.raises(StoreError, match=f"cannot open a store at {path}"):
        ragstore.open(path)


def test_9_surrogates_are_invalid_input_naming_the_field(
    store: ragstore.Store, vectors: ragstore.Collection
) -> None:
    text = store.create_collection("t", embedder=None, dim=4)

    def record(**fields: object) -> list[dict[str, object]]:
        return [{"id": "a", "vector": [1, 0, 0, 0]} | fields]

    cases = [
        (lambda: vectors.search("\ud800 x", mode="keyword"), "query"),
        (lambda: vectors.search("\ud800 x", mode="keyword", cache=True), "query"),
        (lambda: text.upsert(record(text="\udc80")), "text"),
        (lambda: text.upsert(record(id="\ud800")), "records[0].id"),
        (lambda: text.upsert(record(source="\ud800")), "source"),
        (lambda: text.upsert(record(metadata={"\ud800": 1})), "key"),
        (lambda: text.upsert(record(metadata={"k": ["\ud800"]})), "k[0]"),
        (lambda: vectors.delete(["\ud800"]), "ids[0]"),
        (lambda: vectors.count({"\ud800": 1}), "\\ud800"),
        (lambda: vectors.search(vector=[1, 0, 0, 0], where={"a": {"\udc80": 1}}), "a"),
        (lambda: store.get_collection("\ud800"), "name"),
        (lambda: vectors.search("x", mode="keyword", tenant="\ud800"), "tenant"),
    ]
    for call, field in cases:
        with pytest.raises(InvalidInput) as info:
            call()
        assert info.value.field is not None and field in info.value.field
        str(info.value).encode("utf-8")  # the message itself can be printed
    assert text.count() == 0 and vectors.count() == 4


def test_9_deep_filters_and_metadata_are_invalid_input_at_any_depth(
    vectors: ragstore.Collection,
) -> None:
    deep: dict[str, object] = {"x": 1}
    for _ in range(5000):
        deep = {"$not": deep}
    with pytest.raises(InvalidFilter, match="nested deeper"):
        vectors.count(deep)
    nested: list[object] = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(InvalidInput, match="nested deeper"):
        vectors.upsert([{"id": "z", "vector": [1, 0, 0, 0], "metadata": {"n": nested}}])
    assert vectors.count() == 4


def test_12_nan_metadata_is_refused_everywhere(
    tmp_path: Path, vectors: ragstore.Collection
) -> None:
    with pytest.raises(InvalidInput, match="metadata"):
        vectors.upsert([{"id": "z", "vector": [1, 0, 0, 0], "metadata": {"x": float("nan")}}])
    records = tmp_path / "r.jsonl"
    records.write_text('{"id": "n", "text": "x", "score": NaN}\n')
    store = tmp_path / "store"
    result = run(store, "ingest", str(records), "--json")
    assert json.loads(result.stdout)["documents_added"] == 0
    assert "not a JSON number" in json.loads(result.stdout)["errors"][0]


def test_13_a_match_all_delete_must_say_all(vectors: ragstore.Collection) -> None:
    with pytest.raises(InvalidInput, match="all=True") as info:
        vectors.delete(where={})
    assert info.value.field == "where"
    with pytest.raises(InvalidInput, match="exactly one"):
        vectors.delete(["a"], all=True)
    assert vectors.count() == 4
    assert vectors.delete(where={"n": 0}) == 1
    assert vectors.delete(all=True) == 3
    assert vectors.count() == 0


def test_13_the_cli_deletes_everything_only_with_all(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with ragstore.open(store) as opened:
        opened.create_collection("default", embedder=None, dim=2).upsert(
            [{"id": "a", "vector": [1, 0]}, {"id": "b", "vector": [0, 1]}]
        )
    assert_one_line_error(run(store, "delete", "--filter", "{}"), 2)
    assert_one_line_error(run(store, "delete", "--all"), 2)  # no terminal to ask on
    result = run(store, "delete", "--all", "--yes")
    assert result.returncode == 0 and "deleted 2 document(s)" in result.stdout


# --- files: symlinks and size ---------------------------------------------------------


def test_11_links_leading_outside_the_folder_are_reported_not_stored(
    tmp_path: Path, store: ragstore.Store
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Ordinary text.")
    (folder / "passwd.txt").symlink_to("/etc/passwd")
    col = store.collection("c")
    report = col.ingest([folder])
    assert report.documents_added == 1
    assert (
        len(report.errors) == 1 and "passwd.txt: symbolic link to /etc/passwd" in report.errors[0]
    )
    assert col.get("passwd.txt") == []
    followed = col.ingest([folder], follow_symlinks=True)
    assert followed.documents_added == 1 and col.get("passwd.txt") != []


def test_10_a_file_over_the_size_limit_is_skipped_and_keeps_its_documents(
    tmp_path: Path, store: ragstore.Store
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "big.txt").write_text("Refunds take thirty days. " * 10)
    col = store.collection("c")
    assert col.ingest([folder]).documents_added == 1
    (folder / "big.txt").write_text("Refunds take thirty days. " * 100)
    report = col.ingest([folder], sync=True, max_file_bytes=1000)
    assert report.documents_skipped == 1 and report.documents_deleted == 0
    assert "over the limit of 1,000" in report.errors[0]
    assert col.count() == 1
    with pytest.raises(InvalidInput, match="max_file_bytes"):
        col.ingest([folder], max_file_bytes=0)


def test_7_serving_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(tmp_path / "store", "serve", "--port", str(port), timeout=60)
    assert_one_line_error(result, 2)
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
