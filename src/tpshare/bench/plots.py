"""PNG figures of a run, drawn with matplotlib (Agg backend, no display)
from the result dicts alone, so ``--replot results.json`` can redraw
them.

Every contender has one colour and one marker of its own, the same in
every figure; tpshare's designs are drawn with solid lines, baselines
dashed.  Legends sit below the axes, never over the data.
"""

import os

from . import contenders as cts


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# (colour, marker) per contender: a qualitative palette wide enough for
# every contender to have a colour of its own (the polling variants of
# CPython's queue and channel take a lighter shade of theirs, MemChannel
# with pickle of MemChannel's), and a marker that tells apart colours
# close to each other.
_STYLE = {
    "channel": ("#1f77b4", "o"),
    "channel-batch": ("#17becf", "s"),
    "channel-view": ("#000075", "^"),
    "channel-id": ("#9467bd", "v"),
    "channel-park": ("#469990", "<"),
    "channel-spin500": ("#bcbd22", ">"),
    "tpshare-queue": ("#800000", "P"),
    "memchannel": ("#d62728", "D"),
    "memchannel-pickle": ("#ff9896", "d"),
    "cpython-queue": ("#2ca02c", "x"),
    "cpython-queue-mv": ("#ff7f0e", "+"),
    "cpython-queue-pickle": ("#8c564b", "1"),
    "cpython-queue-poll": ("#98df8a", "2"),
    "cpython-channel": ("#f032e6", "X"),
    "cpython-channel-poll": ("#f7b6d2", "3"),
    "threads": ("#7f7f7f", "*"),
    "mp-pipe": ("#000000", "h"),
    "mp-shm": ("#b8860b", "p"),
    "bocpy": ("#808000", "8"),
    "backport-queue": ("#ffd8b1", "H"),
}
_LABEL = {c.name: c.label for c in cts.ALL}
_OURS = {c.name for c in cts.ALL if c.ours}


def colour(name):
    """The contender's colour in every figure."""
    return _STYLE.get(name, ("#333333", "."))[0]


def _style(name):
    col, marker = _STYLE.get(name, ("#333333", "."))
    return {"color": col, "marker": marker, "markersize": 5,
            "linestyle": "-" if name in _OURS else "--",
            "linewidth": 2.0 if name in _OURS else 1.4,
            "label": _LABEL.get(name, name)}


def _legend_below(fig, axes, ncol=4):
    """One legend for the figure, under its axes (the lines of every axis,
    each label once)."""
    seen = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="upper center",
                   bbox_to_anchor=(0.5, 0.0), ncol=min(ncol, len(seen)),
                   fontsize=8, frameon=False)


def _save(fig, plt, path):
    # bbox_inches="tight" grows the image to take in the legend below.
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


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
    """Messages/s against payload size, a panel per kind (a bar per
    contender for one int).  Messages/s, not bytes/s: a zero-copy transport
    moves no bytes, and its rate does not depend on the size."""
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
                if rec and rec.get("median_msgs_per_s"):
                    xs.append(s)
                    ys.append(rec["median_msgs_per_s"])
            if xs:
                ax.plot(xs, ys, **_style(name))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([_fmt_size(s) for s in sizes], rotation=45,
                           ha="right", fontsize=8)
        ax.set_xlabel("payload size")
        ax.set_ylabel("messages/s (log)")
        ax.set_title(f"{kind} payloads, one sender -> one receiver")
        ax.grid(True, which="both", alpha=0.3)
    if has_int:
        ax = axes[-1]
        row = res["points"]["int/8"]
        names = [n for n in res["contenders"]
                 if n in row and row[n].get("median_msgs_per_s")]
        vals = [row[n]["median_msgs_per_s"] / 1e6 for n in names]
        ax.barh(range(len(names)), vals, color=[colour(n) for n in names])
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
    _legend_below(fig, axes[:len(kinds)], ncol=5)
    return _save(fig, plt, path)


def _cdf(ax, stats, names, title, xlabel):
    for name in names:
        q = stats[name]["quantiles_ns"]
        ys = [i / (len(q) - 1) for i in range(len(q))]
        st = _style(name)
        st["markevery"] = max(1, len(q) // 8)
        ax.plot([v / 1e3 for v in q], ys, **st)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of round trips <= x")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def latency(doc, res, path):
    plt = _plt()
    st = res["stats"]
    names = [n for n in res["contenders"] if n in st]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5.2))
    _cdf(a1, st, names, "distribution (CDF)", "round trip, us (log)")
    med = [st[n]["median_ns"] / 1e3 for n in names]
    p99 = [st[n]["p99_ns"] / 1e3 for n in names]
    y = range(len(names))
    a2.barh(y, med, color=[colour(n) for n in names])
    a2.scatter(p99, y, marker="|", s=200, color="black", zorder=3)
    a2.set_yticks(list(y))
    a2.set_yticklabels([_LABEL.get(n, n) for n in names], fontsize=8)
    a2.invert_yaxis()
    a2.set_xscale("log")
    a2.set_xlabel("round trip, us (log)")
    a2.set_title("median (bar) and p99 (black tick)")
    a2.grid(True, axis="x", which="both", alpha=0.3)
    fig.suptitle("Ping-pong latency, 8-byte messages\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    _legend_below(fig, [a1], ncol=4)
    return _save(fig, plt, path)


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
    ax.set_title("Release latency of a MemChannel view\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    _legend_below(fig, [ax], ncol=3)
    return _save(fig, plt, path)


def scaling(doc, res, path):
    from . import scaling as experiment
    plt = _plt()
    ks = res["workers"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    verdict = experiment.no_parallelism(res)
    if verdict is None:
        ax.plot(ks, ks, color="black", linestyle=":", label="perfect")
        colors = {"interpreters": "#d62728", "threads": "#7f7f7f",
                  "processes": "#ff7f0e"}
        markers = {"interpreters": "D", "threads": "*", "processes": "h"}
        for kind in res["kinds"]:
            r = res["results"][kind]
            ax.plot(ks, [r[str(k)]["speedup"] for k in ks],
                    marker=markers.get(kind, "o"), color=colors.get(kind),
                    label=kind,
                    linestyle="-" if kind == "interpreters" else "--")
        ax.set_ylim(bottom=0)
    else:
        # Speed-ups from a host without parallelism would only show that.
        import textwrap
        ax.text(0.5, 0.5, textwrap.fill(verdict, 50, break_on_hyphens=False),
                ha="center", va="center", transform=ax.transAxes, fontsize=9)
    ax.set_xticks(ks)
    ax.set_xlabel("workers (each runs the same CPU-bound loop)")
    ax.set_ylabel("speed-up: k x T(1) / T(k)")
    ax.grid(True, alpha=0.3)
    ax.set_title("Parallel scaling, pure Python\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    _legend_below(fig, [ax], ncol=4)
    return _save(fig, plt, path)


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
        ax.bar(xs, ys, width=width, color=colour(name),
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
    ax.set_title("Memory per queued message\n" + _subtitle(doc), fontsize=10)
    fig.tight_layout()
    _legend_below(fig, [ax], ncol=4)
    return _save(fig, plt, path)


# The shm experiment's contenders (between processes): tpshare.shm in
# reds, solid; the baselines dashed.
_SHM_STYLE = {
    "shm": ("#d62728", "D"),
    "shm-batch": ("#ff9896", "d"),
    "shm-chan-batch": ("#c0392b", "v"),
    "shm-buffer": ("#800000", "P"),
    "shm-copy": ("#e6194b", "o"),
    "mp-queue": ("#2ca02c", "x"),
    "mp-queue-batch": ("#98df8a", "2"),
    "faster-fifo": ("#1f77b4", "s"),
    "faster-fifo-batch": ("#17becf", "^"),
    "shared_memory": ("#b8860b", "p"),
    "mp-pipe": ("#000000", "h"),
}


def shm(doc, res, path):
    """Between processes: 64-byte messages/s (bars), buffers' messages/s
    against size (lines), ping-pong round trip (bars)."""
    from . import shm as experiment
    plt = _plt()
    small, buffers, ping = res["small"], res["buffers"], res["pingpong"]
    if not small and not buffers:
        return None
    fig, (a1, a2, a3) = plt.subplots(
        1, 3, figsize=(15, 5), gridspec_kw={"width_ratios": [2, 3, 1.3]})

    def style(kind):
        col, marker = _SHM_STYLE.get(kind, ("#333333", "."))
        return col, marker, kind.startswith("shm")

    kinds = list(small)
    for i, kind in enumerate(kinds):
        col, _, ours = style(kind)
        a1.bar(i, small[kind]["median_msgs_per_s"], color=col,
               hatch=None if ours else "//", edgecolor="white",
               label=experiment.LABELS.get(kind, kind))
    a1.set_xticks(range(len(kinds)))
    a1.set_xticklabels([experiment.LABELS.get(k, k) for k in kinds],
                       rotation=30, ha="right", fontsize=7)
    a1.set_yscale("log")
    a1.set_ylabel("messages/s (log)")
    a1.set_title(f"{experiment.SMALL}-byte messages", fontsize=9)
    a1.grid(True, axis="y", which="both", alpha=0.3)
    sizes = sorted(int(s) for s in buffers)
    for kind in experiment.BUFFER_NAMES:
        pts = [(s, buffers[str(s)][kind]["median_msgs_per_s"])
               for s in sizes if kind in buffers[str(s)]]
        if not pts:
            continue
        col, marker, ours = style(kind)
        a2.plot([p[0] for p in pts], [p[1] for p in pts], color=col,
                marker=marker, linestyle="-" if ours else "--",
                linewidth=2.0 if ours else 1.4,
                label=experiment.LABELS.get(kind, kind))
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xticks(sizes)
    a2.set_xticklabels([_fmt_size(s) for s in sizes])
    a2.set_xlabel("buffer size (segment buffer: the hand-off alone)")
    a2.set_ylabel("messages/s (log)")
    a2.set_title("Buffers", fontsize=9)
    a2.grid(True, which="both", alpha=0.3)
    pk = list(ping)
    for i, kind in enumerate(pk):
        col, _, ours = style(kind)
        a3.bar(i, ping[kind]["median_ns"] / 1e3, color=col,
               hatch=None if ours else "//", edgecolor="white")
    a3.set_xticks(range(len(pk)))
    a3.set_xticklabels([experiment.LABELS.get(k, k) for k in pk],
                       rotation=30, ha="right", fontsize=7)
    a3.set_ylabel("median round trip, us")
    a3.set_title(f"Ping-pong, {experiment.PINGPONG} bytes", fontsize=9)
    a3.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Between processes (tpshare.shm)\n" + _subtitle(doc),
                 fontsize=10)
    fig.tight_layout()
    _legend_below(fig, [a2], ncol=5)
    return _save(fig, plt, path)


DRAW = {
    "throughput": throughput,
    "latency": latency,
    "release": release,
    "scaling": scaling,
    "memory": memory,
    "shm": shm,
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
