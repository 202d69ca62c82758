"""Markdown tables: the one writer behind `compare.md`, a study's `pareto.md` and the
benchmarks' printed tables.

Cells are written as given (`str` of each), unpadded, so the text diffs line by line; a
caller formats its numbers first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """`| a | b |`, `|---|---|`, then one line per row; no newline after the last."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
