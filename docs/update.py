"""Writes the generated tables of docs/presets.md from sgan_keras/presets.py.

    python docs/update.py            # rewrites the tables
    python docs/update.py --check    # exits 1 if docs/presets.md is stale

Each table sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.
"""

import os
import sys

# This checkout's sgan_keras, whichever copy is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sgan_keras import faults, presets  # noqa: E402

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets.md")
TABLES = {"procedures": presets.procedure_markdown, "deviations": presets.deviations_markdown}


def updated(text):
    for name, make in TABLES.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{make()}\n{end}{tail}"
    return text


def main():
    with open(PATH, encoding="utf-8") as file:
        text = file.read()
    new = updated(text)
    if "--check" in sys.argv:
        sys.exit(0 if new == text else 1)
    faults.write_text(PATH, new)     # in one rename, UTF-8 whatever the locale


if __name__ == "__main__":
    main()
