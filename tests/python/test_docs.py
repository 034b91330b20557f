# The examples of docs/python.md run as shown: each ```python block in a fresh interpreter, in an
# empty directory.
import pathlib
import re
import subprocess
import sys

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "python.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


def test_the_page_opens_with_a_five_line_example():
    lines = DOC.read_text().splitlines()
    assert lines[0].startswith("# ") and lines[2] == "```python"
    assert len(BLOCKS[0].strip().splitlines()) == 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index, tmp_path, child_env):
    r = subprocess.run([sys.executable, "-c", BLOCKS[index]], cwd=tmp_path, env=child_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"example {index}:\n{BLOCKS[index]}\n{r.stderr}"
