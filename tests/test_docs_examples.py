"""Every Python and shell example in the README and ``docs/`` runs, as written, in a
process of its own, in a fresh folder beside the sample documents. An example that
continues an earlier one gets that context from ``CONTEXT`` (the store and collections it
names); the Redis one runs against a real redis-server, the remote one against a real
ragstore server, the OpenAI and Ollama ones against a local service that speaks their
APIs. Shell examples run with ``bash -e`` and this environment's ``ragstore``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from server_helpers import Server, write_keys
from test_cache import RedisServer
from test_embedders import StandIn

from ragstore.embed import Embedder

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SHELL_BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
EXAMPLES = [
    (path.relative_to(REPO).as_posix(), number, code)
    for path in DOCS
    for number, code in enumerate(BLOCK.findall(path.read_text(encoding="utf-8")), start=1)
]
_STORE = "import ragstore\nstore = ragstore.open('./store')\n"
_DOCS_V1 = _STORE + (
    "store.collection('docs_v1').upsert([{'id': 'a', 'text': 'Refunds within 30 days.'}])\n"
)
SHELL_EXAMPLES = [
    (path.relative_to(REPO).as_posix(), number, code)
    for path in DOCS
    for number, code in enumerate(SHELL_BLOCK.findall(path.read_text(encoding="utf-8")), start=1)
]
INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
"""README command 1 starts by installing ragstore, as the test run itself did."""
RUN_ELSEWHERE = {("README.md", 2): "command 2 is the test run that runs this test"}
SHELL_CONTEXT = {
    ("docs/embedders.md", 1): "ln -s examples/sample-docs docs\n",
    (
        "docs/operations.md",
        1,
    ): "ragstore --store ./data --collection docs ingest examples/sample-docs\n",
    (
        "docs/operations.md",
        2,
    ): "ragstore --store ./data --collection docs_v1 ingest examples/sample-docs\n",
}
KEY_OF_SERVICE = "sk-..."
"""The API key the embedders guide exports."""
CONTEXT = {
    ("docs/cache.md", 1): _STORE,
    ("docs/operations.md", 1): "from pathlib import Path\n"
    + _STORE
    + ("store.collection('docs').upsert([{'id': 'a', 'text': 'Refunds within 30 days.'}])\n"),
    ("docs/operations.md", 2): _DOCS_V1 + "store.set_alias('docs', 'docs_v1')\n",
    ("docs/python.md", 3): _DOCS_V1 + "store.create_collection('docs_v2')\n",
}
"""What an example that continues an earlier one takes as given."""
REDIS_IN_DOCS = "redis://127.0.0.1:6379/0"
SERVER_IN_DOCS = "http://127.0.0.1:8000"
KEY_IN_DOCS = "my-admin-key"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("server")
    keys = write_keys(
        root / "keys.json", {KEY_IN_DOCS: {"id": "docs", "role": "admin", "tenants": ["*"]}}
    )
    server = Server(root / "store", root / "server.log", keys=keys)
    try:
        yield server.wait_ready().url
    finally:
        server.terminate()


def test_the_readme_is_short_and_links_the_guides() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for guide in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{guide.name})" in readme, guide.name


def test_the_docs_have_examples() -> None:
    assert ("README.md", 1) in {(name, number) for name, number, _ in EXAMPLES}
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize(
    ("name", "number", "code"), EXAMPLES, ids=[f"{n}#{i}" for n, i, _ in EXAMPLES]
)
def test_an_example_runs(
    name: str, number: int, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if REDIS_IN_DOCS in code:
        code = code.replace(REDIS_IN_DOCS, request.getfixturevalue("redis_url"))
    if SERVER_IN_DOCS in code:
        code = code.replace(SERVER_IN_DOCS, request.getfixturevalue("server_url"))
    script = tmp_path / "example.py"
    script.write_text(CONTEXT.get((name, number), "") + code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    ran = run_beside_examples([sys.executable, str(script)], tmp_path, env)
    assert ran.returncode == 0, f"{name} example {number} failed:\n{ran.stderr}"


def run_beside_examples(
    args: list[str], folder: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in ``folder``, beside a link to the sample documents, offline."""
    (folder / "examples").symlink_to(REPO / "examples")
    return subprocess.run(
        args,
        cwd=folder,
        env=env | {"HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def embedding_service(embedder: Embedder) -> Iterator[StandIn]:
    service = StandIn(embedder, key=KEY_OF_SERVICE)
    yield service
    service.stop()


def test_the_docs_have_shell_examples() -> None:
    assert {("README.md", 1), ("docs/operations.md", 1)} <= {(n, i) for n, i, _ in SHELL_EXAMPLES}


@pytest.mark.parametrize(
    ("name", "number", "code"), SHELL_EXAMPLES, ids=[f"{n}#{i}" for n, i, _ in SHELL_EXAMPLES]
)
def test_a_shell_example_runs(
    name: str, number: int, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if (name, number) in RUN_ELSEWHERE:
        assert "scripts/check" in code  # what .ci/run runs, in a fresh clone
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGSTORE_", "OLLAMA_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if "openai:" in code or "ollama:" in code:
        service: StandIn = request.getfixturevalue("embedding_service")
        env |= {"RAGSTORE_OPENAI_BASE_URL": f"{service.url}/v1", "OLLAMA_HOST": service.url,
                "RAGSTORE_OPENAI_API_KEY": KEY_OF_SERVICE}  # fmt: skip
    script = SHELL_CONTEXT.get((name, number), "") + code.replace(INSTALL, "")
    ran = run_beside_examples(["bash", "-e", "-c", script], tmp_path, env)
    assert ran.returncode == 0, f"{name} shell example {number} failed:\n{ran.stderr}"
