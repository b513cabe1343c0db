"""Build tpshare: the C extension tpshare._tpshare, the benchmarks' private
probes tpshare.bench._probes and the Python package.

Environment variables (read at build time):
  TPSHARE_DEBUG=1     -O0 -g with assertions on
  TPSHARE_SANITIZE=1  AddressSanitizer (with LeakSanitizer) + UBSan
  TPSHARE_SANITIZE=thread  ThreadSanitizer
  TPSHARE_WERROR=1    warnings are errors (CI sets it)
"""
import os
import sys
from glob import glob

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

# Refuse early, before a compiler fails on the first Linux-only call.
if not sys.platform.startswith("linux"):
    sys.exit(f"tpshare supports Linux only (this is {sys.platform}): it "
             "relies on Linux's threads, clocks and CPU numbering")


class build_py_with_header(build_py):
    """Ship include/tpshare.h inside the package, for get_include()."""

    def run(self):
        super().run()
        target = os.path.join(self.build_lib, "tpshare", "include")
        self.mkpath(target)
        self.copy_file(os.path.join("include", "tpshare.h"), target)


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


compile_args = ["-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                "-fvisibility=hidden"]
link_args = []
if flag("TPSHARE_WERROR"):
    compile_args.append("-Werror")
if flag("TPSHARE_DEBUG"):
    compile_args += ["-O0", "-g", "-UNDEBUG"]
sanitize = os.environ.get("TPSHARE_SANITIZE", "")
if sanitize == "thread":
    san = ["-fsanitize=thread", "-fno-omit-frame-pointer"]
    compile_args += san + ["-g"]
    link_args += san
elif flag("TPSHARE_SANITIZE"):
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
           "-fno-sanitize-recover=undefined"]
    compile_args += san + ["-g"]
    link_args += san

# src/shm_*.c are tpshare._shm, which shares no code with the core.
shm_sources = sorted(glob("src/shm_*.c"))
sources = sorted(glob("registry/*.c")) + sorted(
    s for s in glob("src/*.c") if s not in shm_sources)
headers = (["include/tpshare.h"] + sorted(glob("registry/*.h"))
           + sorted(glob("src/*.h")))

setup(
    cmdclass={"build_py": build_py_with_header},
    ext_modules=[
        Extension(
            "tpshare._tpshare",
            sources=sources,
            depends=headers,
            include_dirs=["include", "src"],
            define_macros=[("TPSHARE_BUILD_CORE", "1")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        ),
        # Channels between processes in shared memory (tpshare.shm).
        Extension(
            "tpshare._shm",
            sources=shm_sources,
            depends=["src/shm.h", "src/shm_py.h", "src/compat.h"],
            include_dirs=["src"],
            define_macros=[("TPSHARE_BUILD_CORE", "1")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        ),
        # The machine's floors the benchmarks measure beside tpshare: no
        # tpshare internals, so kept out of the production extension.
        Extension(
            "tpshare.bench._probes",
            sources=["src/tpshare/bench/_probes.c",
                     "src/tpshare/bench/_probes_copy.c"],
            depends=["src/tpshare/bench/_probes.h"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        ),
    ],
)
