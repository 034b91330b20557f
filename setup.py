"""Builds the Python module for pip (pyproject.toml) with the project's CMake build.

`python3 -m pip install --no-build-isolation .` runs this: CMake configures the checkout into
setuptools' build_temp (build/temp.*/cmake, kept, so a second install rebuilds only what
changed) with only the library and the module (no tests, tools or install rules), for the
interpreter pip runs under, and the extension module it builds (build/python/bigarray/_bigarray*.so
there) is what the wheel holds, with the package's Python files (libbigarray/python/bigarray/). The library is linked into the module statically: the wheel needs no
libbigarray.so. The package's version is the project's (CMakeLists.txt), which is also
bigarray.__version__. Build needs: cmake, g++ and the -dev packages of scripts/setup.sh.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent


def project_version():
    text = (ROOT / "CMakeLists.txt").read_text()
    m = re.search(r"project\(bigarray VERSION (\d+\.\d+\.\d+)", text)
    if not m:
        raise RuntimeError("setup.py: no 'project(bigarray VERSION X.Y.Z' in CMakeLists.txt")
    return m.group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = pathlib.Path(self.build_temp).resolve() / "cmake"
        subprocess.check_call([
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DBIGARRAY_PYTHON=ON", "-DBIGARRAY_TESTS=OFF", "-DBIGARRAY_BENCH=OFF",
            "-DBIGARRAY_CLI=OFF", "-DBIGARRAY_INSTALL=OFF",
        ])
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.check_call(["cmake", "--build", str(build_dir), "--target", "bigarray_python",
                               "-j", jobs])
        built = sorted((build_dir / "python" / "bigarray").glob("_bigarray*.so"))
        if len(built) != 1:
            raise RuntimeError(f"setup.py: expected one module in {build_dir / 'python' / 'bigarray'}, found {built}")
        dest = pathlib.Path(self.get_ext_fullpath(ext.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[0], dest)


setup(
    version=project_version(),
    packages=["bigarray"],  # named: no setuptools discovery
    package_dir={"bigarray": "libbigarray/python/bigarray"},
    py_modules=[],
    ext_modules=[Extension("bigarray._bigarray", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
