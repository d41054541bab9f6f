"""A Griffe extension for the API pages: the docstrings' reStructuredText math as
MathJax math.

The docstrings write math as reStructuredText (``:math:`x``` inline, ``.. math::``
blocks), which reads well in ``help()`` and in Sphinx. MkDocs renders Markdown, where
those would show up as raw text; this extension rewrites them, in the copy of each
docstring that mkdocstrings renders, into the ``\\(x\\)`` and ``\\[x\\]`` delimiters that
``pymdownx.arithmatex`` (generic mode) hands to MathJax. The source is not changed.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_INLINE = re.compile(r":math:`([^`]+)`")
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")


def rst_math_to_markdown(text: str) -> str:
    """``text`` with ``:math:`...``` as ``\\(...\\)`` and every ``.. math::`` directive
    (its argument and its indented block) as a ``\\[...\\]`` display."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        match = _BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, body = match["indent"], [match["first"]] if match["first"].strip() else []
        i += 1
        block = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)
        ):
            block.append(lines[i])
            i += 1
        body += textwrap.dedent("\n".join(block)).strip().splitlines()
        out += [
            "",
            f"{indent}\\[",
            *(f"{indent}{b}" for b in body if b.strip()),
            f"{indent}\\]",
            "",
        ]
    return _INLINE.sub(lambda m: f"\\({m[1]}\\)", "\n".join(out))


class RstMath(griffe.Extension):
    """Rewrites every loaded docstring with :func:`rst_math_to_markdown`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_math_to_markdown(obj.docstring.value)
