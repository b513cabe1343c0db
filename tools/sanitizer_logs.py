"""Read the sanitizer logs of a test run and fail on what is tpshare's.

    python tools/sanitizer_logs.py LOG_DIR

tests/run.sh points the sanitizers' `log_path` into LOG_DIR, so every
process of the run (pytest itself, the child processes that crash and
teardown tests start) writes its reports there, one file per process.

- Any AddressSanitizer or ThreadSanitizer error report fails the run.
  (ThreadSanitizer reports whose stacks hold no tpshare frame are about
  CPython itself, which is not built with the sanitizer: they are counted
  and not shown.)
- A LeakSanitizer report lists leaks one paragraph each, with the stack
  of the allocation.  A direct leak (memory nothing points to) whose
  stack holds a tpshare frame fails the run.  An indirect leak is memory
  reachable only from a direct one: when that is CPython's (an
  interpreter does not free everything it allocated at exit, module
  states included), what tpshare allocated and linked to it is not
  tpshare's leak; those are counted apart, as are CPython's own.

Exit status: 0 when nothing of tpshare's was found, 1 otherwise.
"""
import os
import re
import sys

# A frame is tpshare's when it is in tpshare's extension module or the
# tests' extension, by symbol or by file.
TPSHARE_FRAME = re.compile(
    r"_(?:tpshare|probes)[.a-z0-9_-]*\.so|tpshare_testext|\bin tps_"
    r"|\bin TpShare_|(?:^|[\s/])(?:src|registry|src/tpshare/bench)/"
    r"[a-z_]+\.[ch]:")
FRAME = re.compile(r"^\s+#\d+ ")


def paragraphs(text):
    """The report split at blank lines."""
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def is_tpshare(paragraph):
    return any(TPSHARE_FRAME.search(line)
               for line in paragraph.splitlines() if FRAME.match(line))


def scan(path):
    """(failures, ignored leaks, ignored races, indirect leaks of tpshare's
    memory held by a leak of CPython's) of one log file."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    failures, leaks, races, held = [], 0, 0, 0
    if "ERROR: AddressSanitizer" in text:
        failures.append(text)
        return failures, leaks, races, held
    if "LeakSanitizer has encountered a fatal error" in text:
        failures.append(text)
        return failures, leaks, races, held
    for report in re.split(r"(?m)^=+\n", text):
        if "WARNING: ThreadSanitizer" in report:
            if is_tpshare(report):
                failures.append(report)
            else:
                races += 1
    for par in paragraphs(text):
        par = par.lstrip()
        if par.startswith("Direct leak") and is_tpshare(par):
            failures.append(par)
        elif par.startswith("Indirect leak") and is_tpshare(par):
            held += 1
        elif par.startswith(("Direct leak", "Indirect leak")):
            leaks += 1
    return failures, leaks, races, held


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    folder = argv[1]
    failures, leaks, races, held, files = [], 0, 0, 0, 0
    for name in sorted(os.listdir(folder)):
        files += 1
        f, n_leaks, n_races, n_held = scan(os.path.join(folder, name))
        failures += ["== %s\n%s" % (name, text) for text in f]
        leaks += n_leaks
        races += n_races
        held += n_held
    for text in failures:
        print(text.rstrip() + "\n", file=sys.stderr)
    print("sanitizer logs: %d file(s), %d report(s) of tpshare's, "
          "%d leak(s) and %d race report(s) of CPython's own ignored, "
          "%d indirect leak(s) held by CPython's"
          % (files, len(failures), leaks, races, held))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
