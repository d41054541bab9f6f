"""The documentation builds in strict mode and its Python blocks run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCS_EXTRA = "needs the docs extra: pip install -e '.[test,docs]'"
BLOCKS = [
    (page, i, block)
    for page in PAGES
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))
]


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert PAGES and all(f": {page.name}" in nav for page in PAGES)


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    for module in ("mkdocs", "mkdocstrings_handlers.python", "pymdownx"):
        pytest.importorskip(module, reason=DOCS_EXTRA)
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    api = (tmp_path / "api" / "index.html").read_text()
    # named by the defining module: the package's attributes load lazily
    for name in (
        "saliency.connection_sensitivity",
        "projection.gem_projection",
        "memory.forget_memory",
        "saliency.top_k_mask",
    ):
        assert f'id="scissorhands_jax.{name}"' in api, name
    # the docstrings' reStructuredText math reaches MathJax, not the page as raw text
    assert ":math:" not in api and ".. math::" not in api
    assert api.count('class="arithmatex"') > 50


def test_rst_math_becomes_mathjax_math():
    pytest.importorskip("griffe", reason=DOCS_EXTRA)  # the docs' docstring parser
    sys.path.insert(0, str(ROOT / "docs" / "_ext"))
    try:
        from rst_math import rst_math_to_markdown
    finally:
        sys.path.pop(0)
    text = "Step :math:`g - \\lambda h` here.\n\n    .. math:: a = b\n\n    Args:\n      x: y\n"
    want = "Step \\(g - \\lambda h\\) here.\n\n\n    \\[\n    a = b\n    \\]\n\n    Args:\n"
    want += "      x: y"
    assert rst_math_to_markdown(text) == want
    indented = ".. math::\n\n   x^2\n   + y\n\nafter"
    assert rst_math_to_markdown(indented) == "\n\\[\nx^2\n+ y\n\\]\n\nafter"


@pytest.mark.slow
@pytest.mark.parametrize("page, index, block", BLOCKS, ids=[f"{p.stem}-{i}" for p, i, _ in BLOCKS])
def test_docs_snippet_runs(page, index, block):
    exec(compile(block, f"{page.name} python block {index}", "exec"), {})
