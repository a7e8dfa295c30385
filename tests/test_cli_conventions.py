"""What a new user meets first on the command line: which commands load the model or
make a store, where options may go, what asks before deleting, logging, and what ingest
says (and exits) when it leaves something out. Each test replays an observation of a
first session with the tool, on a real store, mostly through real processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RAGSTORE_BIN, SAMPLE_DOCS

import ragstore
from ragstore.cli import EXIT_SKIPPED, cli

PYTHON = str(Path(RAGSTORE_BIN).with_name("python"))
MODEL_LIBRARIES = ("sentence_transformers", "torch", "onnxruntime")
UNLOADABLE_MODEL = {"RAGSTORE_QUERY_PRECISION": "no-such-precision"}
"""Loading the default model fails, naming this variable, before anything is loaded."""

# Runs the command in a process of its own, then says which model libraries it imported.
IMPORT_PROBE = f"""
import json, sys
from ragstore.cli import main
try:
    main()
except SystemExit as done:
    code = done.code
loaded = sorted(name for name in {MODEL_LIBRARIES!r} if name in sys.modules)
print("imported:", json.dumps(loaded), file=sys.stderr)
sys.exit(code)
"""


def run(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    command: tuple[str, ...] = (RAGSTORE_BIN,),
) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process, with no store or log level chosen by the environment."""
    unset = ("RAGSTORE_PATH", "RAGSTORE_LOG_LEVEL")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def ingested(store_location: str | Path) -> str:
    """A store holding the sample documents in collection ``docs``."""
    code, output = invoke("--store", str(store_location), "--collection", "docs", "ingest",
                          str(SAMPLE_DOCS))  # fmt: skip
    assert code == 0, output
    return str(store_location)


# --- 1. "every CLI query takes ~5 s even in --mode keyword: the embedder is loaded" ----


def test_a_keyword_query_never_loads_the_model(ingested: str) -> None:
    keyword = run(
        "--store", ingested, "--collection", "docs", "query", "gift cards", "--mode", "keyword",
        "--json", command=(PYTHON, "-c", IMPORT_PROBE), env=UNLOADABLE_MODEL,
    )  # fmt: skip
    hybrid = run(
        "--store", ingested, "--collection", "docs", "query", "gift cards", "--json",
        env=UNLOADABLE_MODEL,
    )  # fmt: skip

    assert keyword.returncode == 0, keyword.stderr
    assert "faq-3" in [hit["doc_id"] for hit in json.loads(keyword.stdout)["hits"]]
    assert "imported: []" in keyword.stderr
    # the same variable does stop a command that loads the model
    assert hybrid.returncode == 2 and "RAGSTORE_QUERY_PRECISION" in hybrid.stderr


# --- 2. "a read command from the wrong directory silently creates ./ragstore-data" -----

READ_COMMANDS = [
    ("query", "refund"),
    ("query", "refund", "--mode", "keyword"),
    ("count",),
    ("get", "faq-1"),
    ("collections",),
    ("index",),
    ("delete", "--all", "--yes"),
    ("alias", "list"),
    ("cache", "stats"),
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_a_read_command_makes_no_store_and_names_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAGSTORE_PATH", raising=False)

    code, output = invoke(*args)

    assert code == 1, output
    assert f"no store at {tmp_path / 'ragstore-data'}" in output
    assert "ragstore ingest PATH" in output
    assert list(tmp_path.iterdir()) == []


def test_a_missing_nested_store_path_is_not_made(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b" / "store"

    result = run("--store", str(missing), "count", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: no store at {missing}:")
    assert not (tmp_path / "a").exists()


def test_a_relative_store_path_is_named_absolute(tmp_path: Path) -> None:
    result = run("--store", "elsewhere", "query", "refund", cwd=tmp_path)

    assert result.returncode == 1
    assert f"no store at {tmp_path / 'elsewhere'}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_reading_an_empty_location_on_any_backend_makes_no_store(
    store_location: str | Path,
) -> None:
    code, output = invoke("--store", str(store_location), "count")

    assert code == 1 and "no store " in output and "ragstore ingest" in output
    with pytest.raises(ragstore.NotFound, match="no store"):
        ragstore.open(store_location, create=False)


def test_an_unknown_collection_names_the_store_and_the_next_command(ingested: str) -> None:
    code, output = invoke("--store", ingested, "--collection", "nope", "count")

    assert code == 1
    assert "no collection named 'nope' in the store at" in output
    assert "ragstore collections" in output and "ragstore ingest" in output


# --- 3. "ragstore query refund --store DIR fails: global options only before the verb" -


def test_store_and_collection_may_follow_the_verb(ingested: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    after = run("query", "refund", "--store", ingested, "--collection", "docs", "--mode",
                "keyword", "--json", cwd=elsewhere)  # fmt: skip

    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["hits"]
    assert list(elsewhere.iterdir()) == []  # ./ragstore-data was never made


def test_options_after_the_verb_win_over_those_before(ingested: str, tmp_path: Path) -> None:
    wrong = str(tmp_path / "wrong")

    assert invoke("--store", wrong, "count", "--store", ingested, "--collection", "docs") == (
        0,
        "12\n",
    )
    assert (
        invoke("--store", ingested, "--collection", "nope", "count", "--collection", "docs")[1]
        == "12\n"
    )
    assert not Path(wrong).exists()


# --- 4. "delete with no arguments says 'not both'; delete --filter '{}' asks nothing" --


def test_delete_without_ids_or_filter_is_a_usage_error(ingested: str) -> None:
    code, output = invoke("--store", ingested, "--collection", "docs", "delete")

    assert code == 2
    assert "nothing to delete: give document IDS, --filter JSON or --all" in output
    assert invoke("--store", ingested, "--collection", "docs", "count")[1] == "12\n"


def test_deleting_by_filter_without_a_terminal_needs_yes(ingested: str) -> None:
    args = ("--store", ingested, "--collection", "docs", "delete")
    payments = ("--filter", '{"topic": "payments"}')

    refused = invoke(*args, *payments)
    everything = invoke(*args, "--all")
    match_all = invoke(*args, "--filter", "{}", "--yes")

    assert refused[0] == 2 and "would delete 2 document(s)" in refused[1]
    assert "--yes" in refused[1]
    assert everything[0] == 2 and "would delete 12 document(s)" in everything[1]
    assert match_all[0] == 2 and "--all" in match_all[1]
    assert invoke("--store", ingested, "--collection", "docs", "count")[1] == "12\n"
    assert invoke(*args, *payments, "--yes") == (0, "deleted 2 document(s)\n")
    assert invoke("--store", ingested, "--collection", "docs", "count")[1] == "10\n"


def run_on_a_terminal(answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process whose stdin is a terminal, typing ``answer``."""
    leader, follower = os.openpty()
    try:
        process = subprocess.Popen(
            [RAGSTORE_BIN, *args],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(leader, f"{answer}\n".encode())
        stdout, stderr = process.communicate(timeout=300)
    finally:
        os.close(leader)
        os.close(follower)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_deleting_by_filter_on_a_terminal_asks_first(ingested: str) -> None:
    args = ("--store", ingested, "--collection", "docs", "delete", "--filter",
            '{"topic": "payments"}')  # fmt: skip

    declined = run_on_a_terminal("n", *args)
    count_after_no = invoke("--store", ingested, "--collection", "docs", "count")[1]
    accepted = run_on_a_terminal("y", *args)

    assert declined.returncode == 1, declined.stderr
    assert "Delete 2 document(s) matching" in declined.stderr
    assert "from collection 'docs'" in declined.stderr and "nothing deleted" in declined.stderr
    assert count_after_no == "12\n"
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout == "deleted 2 document(s)\n"
    assert invoke("--store", ingested, "--collection", "docs", "count")[1] == "10\n"


# --- 5. "python -m ragstore does not exist; there is no -v/--log-level" -----------------


def test_python_dash_m_ragstore_is_the_command(ingested: str) -> None:
    as_module = run("--store", ingested, "--collection", "docs", "count",
                    command=(PYTHON, "-m", "ragstore"))  # fmt: skip
    version = run("--version", command=(PYTHON, "-m", "ragstore"))

    assert (as_module.returncode, as_module.stdout) == (0, "12\n")
    assert version.returncode == 0 and ragstore.__version__ in version.stdout


def test_an_unknown_log_level_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    from_env = run("--store", str(tmp_path), "count", env={"RAGSTORE_LOG_LEVEL": "loud"})
    from_option = run("--log-level", "loud", "--store", str(tmp_path), "count")

    for result in (from_env, from_option):
        assert result.returncode == 2
        assert "--log-level" in result.stderr and "loud" in result.stderr


# --- 6. "ingest exits 0 after 2 problems; pypdf's warnings leak; a .docx is skipped
#        without a word" (the log-level tests above run on the same folder) ------------


def pdf_with_wrong_offsets(text: str) -> bytes:
    """A one-page PDF whose cross-reference table points 7 bytes past each object:
    pypdf reads it anyway, logging a warning per object it had to look for."""
    stream = f"BT /F1 12 Tf 20 100 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 144] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO(b"%PDF-1.4\n")
    out.seek(0, io.SEEK_END)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 6\n0000000000 65535 f \n")
    out.write(b"".join(b"%010d 00000 n \n" % (offset + 7) for offset in offsets))
    out.write(b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """Two good files, a PDF pypdf complains about, a .docx and two bad records."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "refunds.md").write_text("# Refunds\n\nRefunds are accepted within 30 days.")
    (folder / "report.pdf").write_bytes(pdf_with_wrong_offsets("Shipping takes five days"))
    (folder / "notes.docx").write_bytes(b"PK\x03\x04 not really a document")
    (folder / "faq.jsonl").write_text(
        '{"id": "q1", "text": "Gift cards never expire."}\n{"id": 5}\nnot json\n'
    )
    return folder


def test_ingest_exits_3_when_it_skipped_something_and_says_what(
    mixed_folder: Path, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")

    plain = run("--store", store, "ingest", str(mixed_folder))
    as_json = run("--store", store, "ingest", str(mixed_folder), "--json")
    allowed = run("--store", store, "ingest", str(mixed_folder), "--allow-skips")

    assert plain.returncode == EXIT_SKIPPED == 3, plain.stderr
    assert "documents added: 3" in plain.stdout  # refunds.md, report.pdf, faq.jsonl:1
    assert "skipped faq.jsonl:2" in plain.stderr and "skipped faq.jsonl:3" in plain.stderr
    assert "2 problem(s)" in plain.stderr
    assert "skipped 1 file(s) of unsupported type: notes.docx" in plain.stderr
    assert "Ignoring wrong pointing object" not in plain.stderr  # pypdf kept quiet
    assert "warning(s) from reading files" in plain.stderr
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 3
    assert report["files_unsupported"] == ["notes.docx"]
    assert [error.split(":")[:2] for error in report["errors"]] == [
        ["faq.jsonl", "2"],
        ["faq.jsonl", "3"],
    ]
    assert report["warnings"]
    assert all(w.startswith("report.pdf: ") for w in report["warnings"])
    assert any("Ignoring wrong pointing object" in w for w in report["warnings"])
    assert allowed.returncode == 0, allowed.stderr
    assert "2 problem(s)" in allowed.stderr


def test_an_unsupported_file_named_on_the_command_line_is_a_problem(
    mixed_folder: Path, tmp_path: Path
) -> None:
    result = run("--store", str(tmp_path / "store"), "ingest", str(mixed_folder / "notes.docx"))

    assert result.returncode == 3
    assert "skipped notes.docx: unsupported file type '.docx'" in result.stderr


def test_verbose_and_log_level_choose_what_reaches_stderr(
    mixed_folder: Path, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    quiet_flags = ("--allow-skips",)

    default = run("--store", store, "ingest", str(mixed_folder), *quiet_flags)
    verbose = run("-v", "--store", store, "ingest", str(mixed_folder), *quiet_flags)
    from_env = run("--store", store, "ingest", str(mixed_folder), *quiet_flags,
                   env={"RAGSTORE_LOG_LEVEL": "INFO"})  # fmt: skip
    errors_only = run("--log-level", "error", "--store", store, "ingest", str(mixed_folder),
                      *quiet_flags)  # fmt: skip

    assert "info:" not in default.stderr and "warning: skipped faq.jsonl:2" in default.stderr
    for chatty in (verbose, from_env):
        assert chatty.returncode == 0, chatty.stderr
        assert "info: skipped notes.docx: unsupported file type" in chatty.stderr
        assert "info: report.pdf: Ignoring wrong pointing object" in chatty.stderr
    assert errors_only.returncode == 0
    assert "warning:" not in errors_only.stderr and "info:" not in errors_only.stderr
    assert "2 problem(s)" in errors_only.stderr  # the summary is not a log message


# --- "the first query prints nothing for 10-18 s while the query model is prepared,
#      then reports the time as the query's" -----------------------------------------


def test_ingest_prepares_the_query_model_and_says_so(tmp_path: Path) -> None:
    cache = {"RAGSTORE_MODEL_CACHE": str(tmp_path / "models")}
    store = str(tmp_path / "store")
    first = run("--store", store, "ingest", str(SAMPLE_DOCS), env=cache)
    again = run("--store", store, "ingest", str(SAMPLE_DOCS), env=cache)
    query = run("--store", store, "query", "how long do I have to return headphones", env=cache)

    assert first.returncode == 0, first.stderr
    assert "preparing the query model (once" in first.stderr
    assert list((tmp_path / "models").rglob("*.onnx")), "the export is cached"
    assert "preparing the query model" not in again.stderr + query.stderr
    took_ms = float(query.stderr.split(" in ")[1].split(" ms")[0])
    assert took_ms < 1000, query.stderr  # the search, not the model's preparation
