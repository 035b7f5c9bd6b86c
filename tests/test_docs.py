"""Generated documentation stays current."""

import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_preset_tables_in_the_docs_are_current():
    result = subprocess.run([sys.executable, "docs/update.py", "--check"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, "docs/presets.md is stale: run python docs/update.py"
