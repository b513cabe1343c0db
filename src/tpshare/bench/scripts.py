"""What the stand-alone benchmark scripts in bench/ (bench_registry.py,
bench_bytes_threshold.py, bench_pool.py) share beyond tpshare.bench.common:
their common options, the header they print, their tables and their JSON
output.  The figures are formatted as the main job formats them.
"""

import argparse
import json
import os
import textwrap

from . import common

_machine = None


def parser(doc):
    """An ArgumentParser with the options every script takes: --quick
    (fewer, shorter rounds, for a CI smoke run), --json PATH, --repeat N
    and --cpu N.  The description is the first line of doc."""
    p = argparse.ArgumentParser(
        description=doc.strip().splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true",
                   help="fewer and shorter rounds (smoke test, noisier)")
    p.add_argument("--json", metavar="PATH",
                   help="also write the machine description and results "
                        "as JSON")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="rounds of measurement (the median is reported)")
    p.add_argument("--cpu", type=int, metavar="N",
                   help="pin the process to CPU N (default: let the OS "
                        "choose)")
    return p


def setup(args):
    """Apply the common options that act before measuring (--cpu)."""
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})


def machine_info():
    """common.machine_info(), measured once per process (after setup(),
    so that it shows the affinity the figures were measured with)."""
    global _machine
    if _machine is None:
        _machine = common.machine_info()
    return _machine


def print_header(title, doc):
    """Print the title, what the script measures (the first paragraph of
    doc), then the machine description."""
    print(title)
    print(textwrap.indent(doc.strip().split("\n\n")[0], "  "))
    print()
    print(common.machine_text(machine_info()))
    print()


def say(text):
    """Print a paragraph folded to the terminal width."""
    print(common.wrap(text))


def print_table(headers, rows):
    """Print rows (sequences of str) under headers (common.table)."""
    print(common.table(headers, rows))


def write_json(path, benchmark, params, results):
    """Write one run of a script, with the machine description, to path."""
    doc = {
        "benchmark": benchmark,
        "machine": machine_info(),
        "params": params,
        "results": results,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
