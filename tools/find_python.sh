# find_python: the interpreter the project's commands use (sourced by
# tests/run.sh and bench/run.sh).  $PYTHON when set, else CPython 3.13
# from pyenv, else python3.13, else python3.
find_python() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif command -v pyenv >/dev/null 2>&1 \
        && [ -x "$(pyenv root)/versions/3.13.0/bin/python3" ]; then
        echo "$(pyenv root)/versions/3.13.0/bin/python3"
    elif command -v python3.13 >/dev/null 2>&1; then
        echo python3.13
    else
        echo python3
    fi
}
