"""Packaging as users meet it: the header for building extensions
(tpshare.get_include(), without the compiled core and from an editable
install), the metadata (version, license, platform), an sdist that holds
the whole source tree and builds, and a third-party extension built with
pip's default build isolation against a tpshare wheel.

The builds here run pip and the compiler in child processes with a plain
environment: under a sanitizer run the sanitizer's runtime and options are
left out (they check tpshare's memory, not its packaging)."""

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import tpshare
from support import run_child
from tpshare import _include

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "include" / "tpshare.h"

# What the sdist must hold: these folders whole, and these files.
SOURCE_DIRS = ("include", "registry", "src", "tests", "tools", "docs", "bench")
TOP_FILES = ("README.md", "CHANGES.md", "LICENSE", "setup.py",
             "pyproject.toml", "MANIFEST.in")
# Build products and caches a working checkout may hold.
NOT_SOURCE_DIRS = {"__pycache__", "build", ".hypothesis", ".pytest_cache"}
NOT_SOURCE_SUFFIXES = {".so", ".o", ".pyc", ".pyo"}

SANITIZER_VARIABLES = ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS",
                       "LSAN_OPTIONS", "TSAN_OPTIONS", "PYTHONMALLOC",
                       "TPSHARE_SANITIZE")


def build_env():
    env = dict(os.environ)
    for name in SANITIZER_VARIABLES:
        env.pop(name, None)
    # Unoptimised: these builds are checked for what they hold, and the
    # compiler's time is most of theirs.
    env["CFLAGS"] = (env.get("CFLAGS", "") + " -O0").strip()
    return env


def run(cmd, cwd=None):
    """Run cmd in the build environment; fail the test with its output
    unless it succeeds."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True,
                          text=True, env=build_env(), cwd=cwd, timeout=600)
    assert proc.returncode == 0, (
        f"{cmd} exited with {proc.returncode}\n"
        f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc


def pip(*args):
    return run([sys.executable, "-m", "pip", "--disable-pip-version-check",
                *args])


def is_source(relative):
    parts = Path(relative).parts
    return not (
        NOT_SOURCE_DIRS.intersection(parts)
        or any(p.endswith(".egg-info") for p in parts)
        or Path(relative).suffix in NOT_SOURCE_SUFFIXES
    )


def source_files():
    """The checkout's source files that the sdist must hold, relative."""
    files = {name for name in TOP_FILES}
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT).as_posix()
            if path.is_file() and is_source(relative):
                files.add(relative)
    return files


def unpack(archive, dest):
    """Unpack an sdist into dest; return its top folder."""
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (top,) = Path(dest).iterdir()
    return top


def bare_python(path):
    """A new virtual environment with nothing installed, not even pip (the
    tests' pip fills it through --python: quicker than one of its own);
    return its interpreter.  Without setuptools there, pip builds with
    build isolation whatever the project declares."""
    run([sys.executable, "-m", "venv", "--without-pip", path])
    return Path(path) / "bin" / "python"


def copy_tree(src, dest):
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", "*.so", "*.o"))
    return dest


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """The sdist of this checkout, built by `build` with the checkout's
    environment (making an sdist compiles nothing)."""
    out = tmp_path_factory.mktemp("sdist")
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation",
         "--outdir", out, ROOT])
    (archive,) = out.glob("tpshare-*.tar.gz")
    return archive


@pytest.fixture(scope="module")
def wheel_dir(sdist, tmp_path_factory):
    """A folder holding a tpshare wheel built from the unpacked sdist.
    The tests' own setuptools builds it (quicker); the editable install
    below builds with pip's default build isolation."""
    tree = unpack(sdist, tmp_path_factory.mktemp("unpacked"))
    out = tmp_path_factory.mktemp("wheels")
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", out, tree)
    return out


# --- get_include -----------------------------------------------------------

def test_get_include_holds_the_header_of_the_source_tree():
    folder = Path(tpshare.get_include())
    assert (folder / "tpshare.h").read_bytes() == HEADER.read_bytes()
    assert tpshare.get_include is _include.get_include
    assert "get_include" in tpshare.__all__


def test_get_include_works_without_the_compiled_core():
    # A build (of another extension against tpshare.h) only needs the
    # header: it must find it where tpshare._tpshare cannot be imported.
    proc = run_child("""
        import importlib.abc, sys

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "tpshare._tpshare":
                    raise ImportError("blocked by the test")
                return None

        sys.meta_path.insert(0, Blocker())
        import tpshare
        from tpshare._include import get_include
        print(tpshare.get_include())
        print(get_include is tpshare.get_include)
        print("tpshare._tpshare" in sys.modules)
        print(tpshare.__version__)
        try:
            tpshare.share(1)
        except ImportError as exc:
            print("error:", exc)
            print("cause:", exc.__cause__)
        try:
            from tpshare import Channel
        except ImportError as exc:
            print("from-import:", type(exc).__name__)
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert (Path(lines[0]) / "tpshare.h").read_bytes() == HEADER.read_bytes()
    assert lines[1:4] == ["True", "False", tpshare.__version__]
    assert lines[4].startswith("error: tpshare.share needs tpshare's compiled core")
    assert "only tpshare.get_include() works" in lines[4]
    assert lines[5] == "cause: blocked by the test"
    assert lines[6] == "from-import: ImportError"


# --- metadata --------------------------------------------------------------

def test_version_is_written_once_and_is_the_distributions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert importlib.metadata.version("tpshare") == tpshare.__version__


def test_license_and_platform_are_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = config["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "Operating System :: POSIX :: Linux" in project["classifiers"]
    # The string form of the license needs setuptools 77.0.3 or later.
    assert "setuptools>=77.0.3" in config["build-system"]["requires"]
    meta = importlib.metadata.metadata("tpshare")
    assert meta["License-Expression"] == "MIT"


def test_test_extra_holds_what_the_tests_import():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["test"]
    names = {req.split(">")[0].split("=")[0].strip() for req in extra}
    imported = set()
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    for package in ("pytest", "hypothesis", "numpy"):
        assert package in imported, package
        assert package in names, package
    # This file builds the sdist with `build`, using the tests' setuptools.
    assert {"build", "setuptools"} <= names


def test_setup_py_refuses_other_platforms():
    proc = run_child(f"""
        import sys
        import setuptools
        sys.platform = "darwin"
        sys.argv = ["setup.py", "--name"]
        with open({str(ROOT / "setup.py")!r}) as f:
            exec(compile(f.read(), "setup.py", "exec"), {{"__name__": "__main__"}})
    """)
    assert proc.returncode == 1
    assert "tpshare supports Linux only (this is darwin)" in proc.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_c_sources_refuse_other_platforms():
    def compile_compat(*flags):
        return subprocess.run(
            ["gcc", *flags, "-DTPSHARE_BUILD_CORE", "-fsyntax-only", "-x", "c",
             f"-I{sysconfig.get_paths()['include']}",
             str(ROOT / "src" / "compat.h")],
            capture_output=True, text=True, env=build_env(), timeout=60)

    elsewhere = compile_compat("-U__linux__")
    assert elsewhere.returncode != 0
    assert "tpshare supports Linux only" in elsewhere.stderr
    linux = compile_compat()
    assert linux.returncode == 0, linux.stderr


# --- the sdist -------------------------------------------------------------

def test_sdist_holds_the_whole_source_tree(sdist):
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers()
                   if "/" in m.name}
        names = {n for n, m in members.items() if m.isfile()}
        missing = source_files() - names
        assert not missing, sorted(missing)
        for needed in ("tests/conftest.py", "tests/support.py",
                       "tests/strategies.py", "tests/ext/README.md",
                       "tests/ext/setup.py", "tests/ext/pyproject.toml",
                       "tests/ext/tpshare_testext.c", "include/tpshare.h",
                       "LICENSE", "tools/find_python.sh"):
            assert needed in names, needed
        assert not any(n.startswith(".ci/") for n in names)
        assert not [n for n in names if not is_source(n)
                    and not n.startswith("src/tpshare.egg-info/")]
        tests = [n for n in names if n.startswith("tests/") and n.endswith(".py")]
        assert len(tests) > 10
        for name in tests:
            ast.parse(tar.extractfile(members[name]).read(), name)


def test_sdist_builds_a_wheel_with_the_header_and_metadata(wheel_dir):
    (wheel,) = wheel_dir.glob("tpshare-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert zf.read("tpshare/include/tpshare.h") == HEADER.read_bytes()
        assert "tpshare/_include.py" in names
        assert [n for n in names if n.startswith("tpshare/_tpshare.")
                and n.endswith(".so")]
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert zf.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = zf.read(f"{info}/METADATA").decode()
    assert f"Version: {tpshare.__version__}\n" in metadata
    assert "License-Expression: MIT\n" in metadata
    assert "Classifier: Operating System :: POSIX :: Linux\n" in metadata


# --- building against tpshare ----------------------------------------------

def test_editable_install_finds_the_header(sdist, tmp_path):
    tree = unpack(sdist, tmp_path / "tree")
    python = bare_python(tmp_path / "venv")
    pip("--python", python, "install", "--no-deps", "--editable", tree)
    proc = run([python, "-c", textwrap.dedent("""
        import importlib.metadata, tpshare
        print(tpshare.__file__)
        print(tpshare.get_include())
        print(tpshare.__version__ == importlib.metadata.version("tpshare"))
        print(tpshare.share((1, "x")).rebuild())
    """)])
    module, folder, same_version, value = proc.stdout.splitlines()
    # The package runs from the source tree, whose header is in include/.
    assert Path(module).is_relative_to(tree)
    assert Path(folder) == tree / "include"
    assert (Path(folder) / "tpshare.h").read_bytes() == HEADER.read_bytes()
    assert same_version == "True"
    assert value == "(1, 'x')"


def test_extension_builds_with_build_isolation(wheel_dir, tmp_path):
    # tests/ext declares tpshare as a build requirement: pip installs it
    # (the local wheel) and setuptools into a fresh build environment.  It
    # builds for an environment without tpshare, as an author's would be.
    ext = copy_tree(ROOT / "tests" / "ext", tmp_path / "ext")
    python = bare_python(tmp_path / "venv")
    out = tmp_path / "out"
    proc = pip("--python", python, "wheel", "--no-deps", "--find-links",
               wheel_dir, "--wheel-dir", out, ext)
    assert "Installing build dependencies" in proc.stdout
    (wheel,) = out.glob("tpshare_testext-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    proc = run_child(f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        import tpshare, tpshare_testext as ext
        print(ext.__file__)
        print(ext.api_version() == tpshare.ABI_VERSION)
        m = ext.Matrix(2, 2, [1, 2, 3, 4])
        r = tpshare.share(m).rebuild()
        print(r == m, r is not m, type(r) is ext.Matrix)
    """)
    assert proc.returncode == 0, proc.stderr
    module, same_abi, round_trip = proc.stdout.splitlines()
    assert Path(module).is_relative_to(site)
    assert same_abi == "True"
    assert round_trip == "True True True"
