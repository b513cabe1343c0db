"""Every ```python example of README.md and docs/*.md runs as written.

Each block runs in a fresh process against the installed package, so an
example that drifts from the API fails here.  A block that cannot run on
its own (it needs a third-party extension, a build, or blocks forever) is
marked with `<!-- not run -->` on the line before its fence.  The
comparison and benchmark pages quote measurement code and are left out.
"""

import os
import re

import pytest

from support import run_child

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIPPED_PAGES = {"comparison.md", "benchmarks.md"}
NOT_RUN = "<!-- not run -->"
FENCE = re.compile(r"^```python\n(.*?)^```\n", re.S | re.M)


def _pages():
    docs = os.path.join(ROOT, "docs")
    pages = [os.path.join(ROOT, "README.md")]
    pages += sorted(
        os.path.join(docs, name)
        for name in os.listdir(docs)
        if name.endswith(".md") and name not in SKIPPED_PAGES
    )
    return pages


def _blocks(path):
    """(line number, code, runnable) of each python block of a page."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, m.start()) + 1
        yield line, m.group(1), before.strip() != NOT_RUN


def _examples():
    for path in _pages():
        rel = os.path.relpath(path, ROOT)
        for line, code, runnable in _blocks(path):
            marks = () if runnable else (pytest.mark.skip(reason=NOT_RUN),)
            yield pytest.param(code, id=f"{rel}:{line}", marks=marks)


def test_the_pages_have_examples():
    assert sum(1 for _ in _examples()) >= 4


@pytest.mark.parametrize("code", list(_examples()))
def test_example_runs(code):
    r = run_child(code, timeout=120)
    assert r.returncode == 0, r.stderr


def test_every_public_name_is_documented():
    import tpshare

    text = ""
    for path in _pages():
        with open(path, encoding="utf-8") as f:
            text += f.read()
    missing = [
        name
        for name in tpshare.__all__
        if not re.search(rf"`(tpshare\.)?{re.escape(name)}\b", text)
    ]
    assert missing == []
