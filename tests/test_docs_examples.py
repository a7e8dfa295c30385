"""Every Python example in the README and ``docs/`` runs, as written, in a process of its
own, in a fresh folder beside the sample documents. An example that continues an
earlier one gets that context from ``CONTEXT`` (the store and collections it names); the
Redis one runs against a real redis-server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from test_cache import RedisServer

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
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
CONTEXT = {
    ("docs/cache.md", 1): _STORE,
    ("docs/operations.md", 1): "from pathlib import Path\n"
    + _STORE
    + ("store.collection('docs').upsert([{'id': 'a', 'text': 'Refunds within 30 days.'}])\n"),
    ("docs/operations.md", 2): _DOCS_V1 + "store.set_alias('docs', 'docs_v1')\n",
    ("docs/python.md", 2): _DOCS_V1 + "store.create_collection('docs_v2')\n",
}
"""What an example that continues an earlier one takes as given."""
REDIS_IN_DOCS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


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
    (tmp_path / "examples").symlink_to(REPO / "examples")
    script = tmp_path / "example.py"
    script.write_text(CONTEXT.get((name, number), "") + code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    ran = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env | {"HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, f"{name} example {number} failed:\n{ran.stderr}"
