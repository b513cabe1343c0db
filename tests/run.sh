#!/usr/bin/env bash
# Run the whole test suite in a virtual environment of its own.
#
#   bash tests/run.sh [pytest args...]
#
# PYTHON            the interpreter to test (default: CPython 3.13 from
#                   pyenv, else python3.13, else python3)
# TPSHARE_SANITIZE=1  build and run under AddressSanitizer, LeakSanitizer
#                     and UBSan
# TPSHARE_SANITIZE=thread  build under ThreadSanitizer and run the
#                     multi-threaded tests (the default selection below)
# TPSHARE_WERROR=1    build with -Werror
# TPSHARE_DEBUG=1     build with -O0 -g and assertions
#
# It creates .venv-<python version>[-asan|-tsan] in the checkout, installs
# the test requirements, builds tpshare and the test extension (tests/ext)
# into it, and runs pytest.  A run that collects no test fails.  Under a
# sanitizer every process of the run writes its reports to a folder of
# its own, read at the end by tools/sanitizer_logs.py: any error, and any
# leak or race with a tpshare frame in its stack, fails the run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

# shellcheck source=../tools/find_python.sh
source "$here/tools/find_python.sh"

python=$(find_python)
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv=".venv-$version"
sanitize=${TPSHARE_SANITIZE:-0}
case "$sanitize" in
    0 | "") sanitize=0 ;;
    1 | address) sanitize=address; venv="$venv-asan" ;;
    thread) venv="$venv-tsan" ;;
    *) echo "tests/run.sh: TPSHARE_SANITIZE is 1 or thread" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# The test requirements are pyproject.toml's `test` and `bench` extras,
# read here so that installing them builds nothing.
extras=$("$venv/bin/python" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
print("\n".join(extras["test"] + extras["bench"]))')
mapfile -t requirements <<<"$extras"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    setuptools wheel "${requirements[@]}"
env_prefix=()
build_prefix=()
logs=""
selection=()
if [ "$sanitize" != 0 ]; then
    logs=$(mktemp -d)
    # rm fails when a process still writes a log after the tests ended:
    # the suite stops its helpers and fails on any child left running.
    trap 'rm -rf "$logs" || echo "tests/run.sh: a process still writes" \
        "sanitizer logs after the tests ended" >&2' EXIT
fi
if [ "$sanitize" = address ]; then
    asan=$(gcc -print-file-name=libasan.so)
    ubsan=$(gcc -print-file-name=libubsan.so)
    # Leaks are judged from the logs (CPython leaves some memory at exit),
    # so finding one does not change a process's exit status.  GCC 12's
    # LeakSanitizer crashes reading glibc 2.36's dynamic TLS unless it
    # leaves __tls_get_addr alone (tpshare's thread-locals are static TLS).
    env_prefix=(env "LD_PRELOAD=$asan:$ubsan" PYTHONMALLOC=malloc
        "ASAN_OPTIONS=detect_leaks=1:exitcode=0:intercept_tls_get_addr=0:abort_on_error=1:log_path=$logs/asan:${ASAN_OPTIONS:-}"
        "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}")
    build_prefix=(env "LD_PRELOAD=$asan:$ubsan" ASAN_OPTIONS=detect_leaks=0)
elif [ "$sanitize" = thread ]; then
    tsan=$(gcc -print-file-name=libtsan.so)
    # setarch -R: this ThreadSanitizer needs the classic address layout.
    env_prefix=(setarch -R env "LD_PRELOAD=$tsan" PYTHONMALLOC=malloc
        "TSAN_OPTIONS=exitcode=0:halt_on_error=0:die_after_fork=0:report_signal_unsafe=0:log_path=$logs/tsan:${TSAN_OPTIONS:-}")
    build_prefix=(setarch -R env "LD_PRELOAD=$tsan")
    # The multi-threaded tests (the others run one thread at a time).
    selection=(tests/test_sanitizers.py tests/test_chancore.py
        tests/test_stress.py tests/test_memchannel.py
        tests/test_objchannel.py tests/test_release.py tests/test_registry.py
        tests/test_process.py)
fi

# Always rebuild: the C sources may have changed since the last run.
rm -rf build tests/ext/build
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --force-reinstall --no-deps .
# The test extension imports tpshare to find its header.
"${build_prefix[@]}" "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check --no-build-isolation --force-reinstall \
    --no-deps ./tests/ext

echo "== tpshare tests on $("$venv/bin/python" -VV | head -1)" \
    "(sanitize=$sanitize)"
# Without a test path among the arguments, the whole suite (or the
# sanitizer's selection).
has_path=0
for arg in "$@"; do
    if [ "${arg:0:1}" != - ] && [ -e "${arg%%::*}" ]; then
        has_path=1
    fi
done
if [ "$has_path" = 1 ]; then
    selection=()
elif [ ${#selection[@]} = 0 ]; then
    selection=(tests)
fi
set +e
TPSHARE_SANITIZE=$sanitize "${env_prefix[@]}" "$venv/bin/python" -m pytest \
    -p no:cacheprovider "${selection[@]}" "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "tests/run.sh: pytest collected no test: failing" >&2
    exit 1
fi
if [ -n "$logs" ]; then
    if ! "$venv/bin/python" tools/sanitizer_logs.py "$logs"; then
        [ "$status" != 0 ] || status=1
    fi
fi
exit "$status"
