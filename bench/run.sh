#!/usr/bin/env bash
# Run the comparison experiments in a virtual environment of their own.
#
#   bash bench/run.sh [experiment ...] [--quick] [--out DIR] [options...]
#
# Everything after the script name goes to `python -m tpshare.bench`
# (--help lists the experiments, sizes and contenders).  Results go to
# ./results/<timestamp>/ (results.json, summary.txt and PNG plots) unless
# --out is given; the tables are printed as the run goes.  A full run
# takes 30-40 minutes on 2 vCPUs, --quick a few.
#
# PYTHON   the interpreter to measure (default: CPython 3.13 from pyenv,
#          else python3.13, else python3)
#
# It creates .venv-<python version> in the checkout if needed (the one
# tests/run.sh uses), installs the bench extra of pyproject.toml
# (matplotlib for the plots, the contenders' packages), builds tpshare
# optimised into it (TPSHARE_DEBUG and TPSHARE_SANITIZE are ignored:
# figures from such builds mean nothing) and runs the experiments from
# the directory it was called in.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start_dir=$(pwd)

# shellcheck source=../tools/find_python.sh
source "$here/tools/find_python.sh"

cd "$here"
python=$(find_python)
version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv="$here/.venv-$version"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" setuptools wheel
# The bench extra: matplotlib for the plots, and the contenders users
# would pick instead.  One that cannot be installed is reported here and
# skipped by the experiments with its reason.
bench_extra=$("$venv/bin/python" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["bench"]))')
mapfile -t bench_requirements <<<"$bench_extra"
for req in "${bench_requirements[@]}"; do
    if ! "${pip[@]}" "$req"; then
        echo "bench/run.sh: could not install $req: the run goes on" \
            "without it" >&2
    fi
done

# Always rebuild, optimised: the C sources may have changed.
rm -rf build
env -u TPSHARE_DEBUG -u TPSHARE_SANITIZE "$venv/bin/python" -m pip install \
    --quiet --disable-pip-version-check --no-build-isolation \
    --force-reinstall --no-deps .

cd "$start_dir"
exec "$venv/bin/python" -m tpshare.bench "$@"
