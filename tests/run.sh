#!/usr/bin/env bash
# Run the whole test suite in a virtual environment of its own.
#
#   bash tests/run.sh [pytest args...]
#
# PYTHON            the interpreter to test (default: CPython 3.13 from
#                   pyenv, else python3.13, else python3)
# TPSHARE_SANITIZE=1  build and run under AddressSanitizer + UBSan
# TPSHARE_WERROR=1    build with -Werror
# TPSHARE_DEBUG=1     build with -O0 -g and assertions
#
# It creates .venv-<python version>[-asan] in the checkout, installs the
# test requirements, builds tpshare and the test extension (tests/ext)
# into it, and runs pytest.  A run that collects no test fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

# shellcheck source=../tools/find_python.sh
source "$here/tools/find_python.sh"

python=$(find_python)
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=".venv-$version"
if [ "${TPSHARE_SANITIZE:-0}" = 1 ]; then
    venv="$venv-asan"
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    setuptools wheel "pytest>=8" "hypothesis>=6.100" numpy "matplotlib>=3.8"
env_prefix=()
if [ "${TPSHARE_SANITIZE:-0}" = 1 ]; then
    asan=$(gcc -print-file-name=libasan.so)
    ubsan=$(gcc -print-file-name=libubsan.so)
    env_prefix=(env "LD_PRELOAD=$asan:$ubsan" PYTHONMALLOC=malloc
        "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:${ASAN_OPTIONS:-}"
        "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}")
fi

# Always rebuild: the C sources may have changed since the last run.
rm -rf build tests/ext/build
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --force-reinstall --no-deps .
# The test extension imports tpshare to find its header.
"${env_prefix[@]}" "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check --no-build-isolation --force-reinstall \
    --no-deps ./tests/ext

echo "== tpshare tests on $("$venv/bin/python" -VV | head -1)" \
    "(sanitize=${TPSHARE_SANITIZE:-0})"
set +e
"${env_prefix[@]}" "$venv/bin/python" -m pytest -p no:cacheprovider tests "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "tests/run.sh: pytest collected no test: failing" >&2
    exit 1
fi
exit "$status"
