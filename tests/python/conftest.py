# Fixtures for the Python module's tests. Run with the module on the path:
#   PYTHONPATH=build/python /usr/bin/python3 -m pytest -q tests/python
import os

import pytest

try:
    import bigarray
except ImportError as e:  # a clear message instead of a collection error per file
    raise ImportError(
        f"cannot import the bigarray module ({e}); build it (cmake --build build --target "
        "bigarray_python) and run with PYTHONPATH=<build>/python"
    ) from e

BLOCK = 4096  # small blocks: every test crosses block boundaries


@pytest.fixture
def path(tmp_path):
    return tmp_path / "db"


@pytest.fixture
def db(path):
    d = bigarray.open(path, cache=16 << 20)
    yield d
    d.close()


@pytest.fixture
def mem():
    d = bigarray.open("memory:", cache=16 << 20)
    yield d
    d.close()


@pytest.fixture
def child_env():
    """The environment for a child /usr/bin/python3 that imports this same module."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(bigarray.__file__))  # .../python/bigarray/__init__.py
    return env
