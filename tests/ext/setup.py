"""Build the C test extensions of tpshare against its public header alone.

tpshare_testext is the extension an outside author would write: it includes
only Python.h and tpshare.h, found through tpshare.get_include().
tpshare_abi_mismatch is built for a made-up ABI version so that importing
it checks the clean failure of TpShare_IMPORT().  tpshare_faults is no
module but a library the tests preload into child processes to make
chosen libc calls of tpshare fail (faults.c).

Install tpshare first, then, in the same environment:

    pip install --no-build-isolation tests/ext

Environment variables (each on when set to "1"):
    TPSHARE_WERROR    compile with -Werror (CI does)
    TPSHARE_DEBUG     -O0 -g, assertions on
    TPSHARE_SANITIZE  AddressSanitizer and UBSan ("thread": ThreadSanitizer)

tpshare_racy_probe races on purpose: the test suite uses it to check that
a ThreadSanitizer build reports what it should.
"""
import os

from setuptools import Extension, setup

import tpshare


def _env_flag(name):
    return os.environ.get(name) == "1"


def _build_args():
    """Return (extra_compile_args, extra_link_args) for the environment."""
    compile_args = ["-Wall", "-Wextra", "-std=c11"]
    link_args = []
    if _env_flag("TPSHARE_WERROR"):
        compile_args.append("-Werror")
    if _env_flag("TPSHARE_DEBUG"):
        compile_args += ["-O0", "-g", "-UNDEBUG"]
    if os.environ.get("TPSHARE_SANITIZE") == "thread":
        sanitize = ["-fsanitize=thread", "-fno-omit-frame-pointer", "-g"]
        compile_args += sanitize
        link_args += sanitize
    elif _env_flag("TPSHARE_SANITIZE"):
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args += sanitize
        link_args += sanitize
    return compile_args, link_args


def _extension(name, sources, define_macros=()):
    compile_args, link_args = _build_args()
    return Extension(
        name,
        sources=[sources] if isinstance(sources, str) else sources,
        include_dirs=[tpshare.get_include()],
        define_macros=list(define_macros),
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


setup(
    name="tpshare-testext",
    version="0",
    description="C test extensions of tpshare, built against tpshare.h",
    ext_modules=[
        _extension("tpshare_testext",
                   ["tpshare_testext.c", "testext_items.c"]),
        _extension("tpshare_abi_mismatch", "abi_mismatch.c",
                   define_macros=[("TPSHARE_ABI_VERSION", "999")]),
        _extension("tpshare_racy_probe", "racy_probe.c"),
        _extension("tpshare_faults", "faults.c"),
    ],
)
