"""Every ```python example of docs/python.md runs, each in a fresh interpreter in an empty
directory, without an error or a warning (ResourceWarning included)."""
import pathlib
import re
import subprocess
import sys

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "python.md"
EXAMPLES = re.findall(r"```python\n(.*?)```\n", DOC.read_text(), re.S)


def test_there_are_examples():
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{k}" for k in range(len(EXAMPLES))])
def test_example_runs(tmp_path, child_env, code):
    r = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code], cwd=tmp_path,
                       env=child_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{code}\n---\n{r.stderr}"
    assert "Warning" not in r.stderr, r.stderr
