"""PNG figures of a run, drawn with matplotlib (Agg backend, no display)
from the result dicts alone, so ``--replot results.json`` can redraw
them.  tpshare's designs are drawn with solid lines, baselines dashed.
"""

import os

from . import contenders as cts


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


_PALETTE = {
    "memchannel": "#d62728",
    "memchannel-pickle": "#ff9896",
    "channel": "#1f77b4",
    "channel-view": "#3182bd",
    "channel-id": "#9ecae1",
    "channel-park": "#6baed6",
    "channel-spin500": "#08306b",
    "tpshare-queue": "#9467bd",
    "cpython-queue": "#2ca02c",
    "cpython-queue-mv": "#98df8a",
    "cpython-queue-pickle": "#8c564b",
    "cpython-queue-poll": "#bcbd22",
    "cpython-channel": "#17becf",
    "cpython-channel-poll": "#9edae5",
    "threads": "#7f7f7f",
    "mp-pipe": "#ff7f0e",
    "mp-shm": "#e377c2",
}
_LABEL = {c.name: c.label for c in cts.ALL}
_OURS = {c.name for c in cts.ALL if c.ours}


def _style(name):
    return {"color": _PALETTE.get(name, "black"),
            "linestyle": "-" if name in _OURS else "--",
            "linewidth": 2.2 if name in _OURS else 1.4,
            "label": _LABEL.get(name, name)}


def _subtitle(doc):
    m = doc["machine"]
    py = m["python"].split()[0]
    return (f"CPython {py}, {m['cpu']}, {m['cores']} cores"
            + (" (quick run)" if doc.get("quick") else ""))


def _fmt_size(n):
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


def throughput(doc, res, path):
    plt = _plt()
    kinds = [k for k in ("bytes", "str")
             if any(p.startswith(k + "/") for p in res["points"])]
    has_int = "int/8" in res["points"]
    ncols = len(kinds) + (1 if has_int else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 5.2),
                             squeeze=False)
    axes = axes[0]
    for ax, kind in zip(axes, kinds):
        keys = [k for k in res["points"] if k.startswith(kind + "/")]
        sizes = sorted(int(k.split("/")[1]) for k in keys)
        for name in res["contenders"]:
            xs, ys = [], []
            for s in sizes:
                rec = res["points"].get(f"{kind}/{s}", {}).get(name)
                if rec and rec.get("median_bytes_per_s"):
                    xs.append(s)
                    ys.append(rec["median_bytes_per_s"] / 1e9)
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3.5, **_style(name))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([_fmt_size(s) for s in sizes], rotation=45,
                           ha="right", fontsize=8)
        ax.set_xlabel("payload size")
        ax.set_ylabel("throughput, GB/s (log)")
        ax.set_title(f"{kind} payloads, one sender -> one receiver")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    if has_int:
        ax = axes[-1]
        row = res["points"]["int/8"]
        names = [n for n in res["contenders"]
                 if n in row and row[n].get("median_msgs_per_s")]
        vals = [row[n]["median_msgs_per_s"] / 1e6 for n in names]
        ax.barh(range(len(names)), vals,
                color=[_PALETTE.get(n, "gray") for n in names])
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([_LABEL.get(n, n) for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("million messages/s (log)")
        ax.set_title("one int per message")
        ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle("Throughput against payload size\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cdf(ax, stats, names, title, xlabel):
    for name in names:
        q = stats[name]["quantiles_ns"]
        ys = [i / (len(q) - 1) for i in range(len(q))]
        ax.plot([v / 1e3 for v in q], ys, **_style(name))
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of round trips <= x")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def latency(doc, res, path):
    plt = _plt()
    st = res["stats"]
    names = [n for n in res["contenders"] if n in st]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.2))
    _cdf(a1, st, names, "distribution (CDF)", "round trip, us (log)")
    med = [st[n]["median_ns"] / 1e3 for n in names]
    p99 = [st[n]["p99_ns"] / 1e3 for n in names]
    y = range(len(names))
    a2.barh(y, med, color=[_PALETTE.get(n, "gray") for n in names],
            label="median")
    a2.scatter(p99, y, marker="|", s=200, color="black", label="p99",
               zorder=3)
    a2.set_yticks(list(y))
    a2.set_yticklabels([_LABEL.get(n, n) for n in names], fontsize=8)
    a2.invert_yaxis()
    a2.set_xscale("log")
    a2.set_xlabel("round trip, us (log)")
    a2.set_title("median (bar) and p99 (tick)")
    a2.grid(True, axis="x", which="both", alpha=0.3)
    a2.legend(fontsize=8)
    fig.suptitle("Ping-pong latency, 8-byte messages\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def release(doc, res, path):
    plt = _plt()
    st = res["stats"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    colors = {"tracker.wait()": "#d62728",
              "poll tracker.released": "#ff9896",
              "ack via Channel": "#1f77b4"}
    for mode in res["modes"]:
        if mode not in st:
            continue
        q = st[mode]["quantiles_ns"]
        ax.plot([v / 1e3 for v in q],
                [i / (len(q) - 1) for i in range(len(q))],
                color=colors.get(mode), label=mode,
                linestyle="--" if mode.startswith("ack") else "-")
    ax.set_xscale("log")
    ax.set_xlabel("receiver's release -> sender sees it, us (log)")
    ax.set_ylabel("fraction <= x")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Release latency of a MemChannel view\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling(doc, res, path):
    plt = _plt()
    ks = res["workers"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.plot(ks, ks, color="black", linestyle=":", label="perfect")
    colors = {"interpreters": "#d62728", "threads": "#7f7f7f",
              "processes": "#ff7f0e"}
    for kind in res["kinds"]:
        r = res["results"][kind]
        ax.plot(ks, [r[str(k)]["speedup"] for k in ks], marker="o",
                color=colors.get(kind), label=kind,
                linestyle="-" if kind == "interpreters" else "--")
    ax.set_xticks(ks)
    ax.set_xlabel("workers (each runs the same CPU-bound loop)")
    ax.set_ylabel("speed-up: k x T(1) / T(k)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Parallel scaling, pure Python\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def memory(doc, res, path):
    plt = _plt()
    keys = [k for k in res.get("payloads", []) if res["points"].get(k)]
    names = res["contenders"]
    if not keys or not names:
        return None
    fig, ax = plt.subplots(figsize=(max(7.5, 1.6 * len(keys) + 3), 5))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs, ys = [], []
        for j, k in enumerate(keys):
            rec = res["points"][k].get(name)
            if rec is not None:
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                ys.append(max(rec["bytes_per_message"], 1))
        ax.bar(xs, ys, width=width, color=_PALETTE.get(name, "gray"),
               label=_LABEL.get(name, name),
               hatch=None if name in _OURS else "//", edgecolor="white")
    labels = []
    for k in keys:
        kind, size = k.split("/")
        labels.append("one int" if kind == "int"
                      else f"{kind} {_fmt_size(int(size))}")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(labels)
    ax.set_yscale("log")
    ax.set_ylabel("bytes per queued message (RSS growth, log)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Memory per queued message\n" + _subtitle(doc), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


DRAW = {
    "throughput": throughput,
    "latency": latency,
    "release": release,
    "scaling": scaling,
    "memory": memory,
}


def draw_all(doc, folder):
    """Draw a figure per experiment in doc; returns the paths written.
    Raises ImportError when matplotlib is not installed."""
    _plt()
    paths = []
    for name, res in doc["experiments"].items():
        fn = DRAW.get(name)
        if fn is None:
            continue
        p = fn(doc, res, os.path.join(folder, f"{name}.png"))
        if p:
            paths.append(p)
    return paths
