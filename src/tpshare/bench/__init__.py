"""The comparison experiments: tpshare's two channel designs against
CPython's own cross-interpreter queues and channels, ``queue.Queue``
between threads, ``multiprocessing`` pipes and
``multiprocessing.shared_memory``, on real isolated interpreters.

Run ``python -m tpshare.bench --help`` (or ``bash bench/run.sh`` from a
checkout).  Each experiment prints its tables (a row per contender, a
column per payload size, split to fit a 120-column terminal) with
tpshare's figures beside every baseline's and the ratios, and the run
writes ``results.json``, ``summary.txt`` and PNG plots into a results
folder.

The modules:

- ``cli``: the command line, the run and its outputs.
- ``common``: machine description, sizes, statistics, timing loops,
  number formatting, tables that fit the terminal, progress bar.
- ``scripts``: what the stand-alone scripts in bench/ share (options,
  header, JSON output).
- ``runner``: where remote code runs (the one place that picks
  ``tpshare.Interpreter`` or the standard library's subinterpreters).
- ``contenders``: each transport, its availability, set-up and the
  sender's side of each loop.
- ``_remote``: the receiver's side, imported inside isolated
  interpreters, threads and child processes (standard library and
  tpshare only).
- ``throughput``, ``latency``, ``release``, ``scaling``, ``memory``,
  ``pep734``: the in-process experiments (``pep734``: one pipeline written
  against PEP 734's API, on ``tpshare.interpreters`` and on CPython's
  module); ``shm``: tpshare.shm between processes.
- ``plots``: the PNG figures (matplotlib, Agg backend).

Importing this package imports nothing heavy: the subinterpreters import
``tpshare.bench._remote`` and must not pull in matplotlib.
"""

# The in-process experiments, then tpshare.shm between processes.
EXPERIMENTS = ("throughput", "latency", "release", "scaling", "memory",
               "pep734", "shm")


def main(argv=None):
    """Run the command line; returns the exit status."""
    from .cli import main as _main
    return _main(argv)
