"""The documentation builds in strict mode and its Python blocks run as written."""

from __future__ import annotations

import html
import importlib
import inspect
import re
import subprocess
import sys
import types
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
        "_saliency.connection_sensitivity",
        "_projection.gem_projection",
        "_memory.forget_memory",
        "_saliency.top_k_mask",
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


def _public_names():
    """``(module, name)`` for every name of ``shs.__all__`` and of the subpackages' public
    lists (a module without ``__all__``: the functions and classes it defines)."""
    import scissorhands_jax as shs

    out = []
    for name in shs.__all__:
        value = getattr(shs, name)
        if not isinstance(value, types.ModuleType):
            out.append(("scissorhands_jax", name))
            continue
        names = getattr(value, "__all__", None)
        if names is None:
            names = [
                n
                for n, v in vars(value).items()
                if not n.startswith("_")
                and (inspect.isfunction(v) or inspect.isclass(v))
                and v.__module__ == value.__name__
            ]
        out.extend((value.__name__, n) for n in names)
    return out


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _summary_words(obj) -> list[str]:
    """The first plain words of the docstring's summary line (before any markup)."""
    words = []
    for word in (obj.__doc__ or "").strip().split("\n")[0].split():
        if not re.fullmatch(r"[A-Za-z0-9,;'()-]+", word):
            break
        words.append(word)
    return words[:4]


@pytest.mark.slow
def test_api_page_documents_every_public_name(tmp_path):
    pytest.importorskip("mkdocstrings")  # the docs extra: pip install -e ".[test,docs]"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    api = (tmp_path / "api" / "index.html").read_text()
    sections = {}  # heading id -> the text of its documentation, up to the next heading
    for chunk in re.split(r'(?=<h\d id="scissorhands_jax)', api)[1:]:
        ident = re.match(r'<h\d id="([^"]+)"', chunk).group(1)
        body = chunk.split('class="doc doc-heading"', 2)
        sections[ident] = _text(body[1] if len(body) > 1 else chunk)
    missing, undocumented = [], []
    for module, name in _public_names():
        obj = getattr(importlib.import_module(module), name)
        found = [text for ident, text in sections.items() if ident.endswith("." + name)]
        if not found:
            missing.append(f"{module}.{name}")
            continue
        has_own_doc = inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj))
        words = " ".join(_summary_words(obj)) if has_own_doc else ""
        if not any(len(text.split()) > 3 and words in text for text in found):
            undocumented.append(f"{module}.{name}")
    assert not missing, f"not on the API page: {missing}"
    assert not undocumented, f"on the API page without their docstring: {undocumented}"
