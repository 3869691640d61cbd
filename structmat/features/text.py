"""Real English sentences that ship on the machine: licence texts, Debian copyright files, Python docstrings.

For calibrating and evaluating text models without downloading anything. Sources (each read if present):

- ``licenses``: ``/usr/share/common-licenses/*`` (GPL, Apache, MPL, ...);
- ``copyright``: ``/usr/share/doc/*/copyright`` (Debian's per-package copyright and licence notes);
- ``docstrings``: the module, class and function docstrings of the Python standard library's source files, read
  with :mod:`ast` (nothing is imported).

Text is split into sentences at ``.``, ``!`` or ``?`` followed by white space; a sentence is kept when it is
30–300 characters long, at least 70 % letters and spaces, and not seen before. The list is sorted, then shuffled
with the seed, so the same machine and seed give the same sentences; :func:`split_sentences` gives disjoint
calibration and held-out sets.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import sysconfig
from pathlib import Path

import numpy as np

__all__ = ["english_sentences", "split_sentences", "TEXT_SOURCES"]

TEXT_SOURCES = ("licenses", "copyright", "docstrings")
_SPLIT = re.compile(r"(?<=[.!?])\s+")


def _licenses() -> list[str]:
    return sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p))


def _copyrights() -> list[str]:
    return sorted(glob.glob("/usr/share/doc/*/copyright"))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(200_000)
    except OSError:
        return ""


def _docstrings(limit_files: int = 400) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.glob("*.py"))[:limit_files]:
        try:
            tree = ast.parse(_read(str(path)))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    texts.append(doc)
    return texts


def _sentences(text: str) -> list[str]:
    out = []
    for sentence in _SPLIT.split(" ".join(text.split())):
        if not 30 <= len(sentence) <= 300:
            continue
        letters = sum(c.isalpha() or c == " " for c in sentence)
        if letters >= 0.7 * len(sentence):
            out.append(sentence)
    return out


def english_sentences(*, sources=TEXT_SOURCES, seed: int = 0, limit: int | None = None) -> list[str]:
    """Distinct English sentences from the machine's text ``sources`` (see the module docstring), seeded order.

    Raises
    ------
    ValueError
        unknown source names, or no sentence found.
    """
    unknown = [s for s in sources if s not in TEXT_SOURCES]
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty subset of {TEXT_SOURCES}; got {sources!r}")
    texts = []
    if "licenses" in sources:
        texts += [_read(p) for p in _licenses()]
    if "copyright" in sources:
        texts += [_read(p) for p in _copyrights()]
    if "docstrings" in sources:
        texts += _docstrings()
    found = sorted({s for text in texts for s in _sentences(text)})
    if not found:
        raise ValueError(f"no English sentences found in {sources} on this machine")
    order = np.random.default_rng(seed).permutation(len(found))
    sentences = [found[i] for i in order]
    return sentences[:limit] if limit is not None else sentences


def split_sentences(sentences: list[str], calibration: int, held_out: int) -> tuple[list[str], list[str]]:
    """The first ``calibration`` sentences and the next ``held_out`` ones: disjoint sets."""
    if calibration < 1 or held_out < 1 or calibration + held_out > len(sentences):
        raise ValueError(f"need calibration >= 1 and held_out >= 1 sentences, {calibration} + {held_out} in all; "
                         f"only {len(sentences)} available")
    return list(sentences[:calibration]), list(sentences[calibration:calibration + held_out])
