"""docs/results.md is written by more than one script: each owns one section.

A section sits between `<!-- begin KEY -->` and `<!-- end KEY -->` lines.
Writing one replaces only its own lines and keeps every other section byte
for byte, so each script reproduces its part of the file exactly however the
others were last run. A section not yet in the file is appended.
"""
from __future__ import annotations

import os


def _markers(key: str):
    return f"<!-- begin {key} -->\n", f"<!-- end {key} -->\n"


def write_section(path: str, key: str, text: str) -> None:
    begin, end = _markers(key)
    block = begin + text.rstrip("\n") + "\n" + end
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    start = old.find(begin)
    if start >= 0:
        stop = old.find(end, start)
        if stop < 0:
            raise ValueError(f"{path}: '{begin.strip()}' has no '{end.strip()}'; mend the file by hand")
        new = old[:start] + block + old[stop + len(end):]
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(new)
