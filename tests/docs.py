"""The code blocks of the project's docs, for the tests that run them as written."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def doc_block(doc: str, after: str, language: str = "bash", gap: str = r"\s*") -> str:
    """The ```LANGUAGE block that follows the regex AFTER in DOC (a path from the repo root), with GAP
    (a regex) between them: right after by default, ".*?" for the first such block further on."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    match = re.search(f"{after}{gap}```{language}\\n(.*?)```", text, re.S)
    assert match, f"{doc}: no ```{language} block after {after!r}"
    return match.group(1)


def doc_blocks(doc: str, language: str) -> list[str]:
    """Every ```LANGUAGE block of DOC, in order."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    return [block.split("```", 1)[0] for block in text.split(f"```{language}\n")[1:]]
