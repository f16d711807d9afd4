"""The accuracy / latency / size plot (PNG bytes), drawn with matplotlib's Agg backend."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any


def _interval(a: dict[str, Any], acc: float, eval_n: int | None) -> tuple[float, float] | None:
    """The 95 % interval of a plotted accuracy in %: top-1's Wilson interval for the evaluation
    set's size, agreement's own (drift); none for Spearman / cosine."""
    m, d = a.get("metrics", {}), a.get("drift", {})
    if "top1" in m and eval_n:
        from edgecompress.targets.metrics import wilson_interval

        lo, hi = wilson_interval(round(acc / 100 * eval_n), eval_n)
        return 100 * lo, 100 * hi
    if "top1" not in m and "spearman" not in m and isinstance(d.get("top1_agreement_low95"), int | float) \
            and isinstance(d.get("top1_agreement_high95"), int | float):
        return 100 * d["top1_agreement_low95"], 100 * d["top1_agreement_high95"]
    return None


def tradeoff_png(artifacts: list[dict[str, Any]], title: str = "", eval_n: int | None = None) -> bytes | None:
    """Accuracy (top-1, else top-1 agreement) vs batch-1 p50 latency; marker area ~ size on disk.
    Points on the Pareto front (faster and more accurate than every other) are outlined. With the
    evaluation set's size `eval_n`, each accuracy has its 95 % interval as a bar: 88.0 vs 88.1 %
    on 700 images looked like a ranking."""
    pts = []
    bars = []
    # two files of one format and precision get their file names in the key, as in the table
    keys = [(a.get("target"), a.get("format"), a.get("precision")) for a in artifacts]
    by_file = len(set(keys)) < len(keys)
    for a in artifacts:
        if a.get("status") != "ok" or "p50" not in a.get("latency_ms", {}):
            continue
        m, d = a.get("metrics", {}), a.get("drift", {})
        acc = m.get("top1", m.get("spearman", d.get("top1_agreement", d.get("cosine"))))
        if not isinstance(acc, int | float) or not math.isfinite(acc):  # null / NaN: nothing to plot
            continue
        bars.append(_interval(a, 100 * acc, eval_n))
        pts.append((a["latency_ms"]["p50"], 100 * acc, a["size_bytes"] / 1e6,
                    (f"{Path(str(a.get('path', ''))).name}: " if by_file else "") + f"{a['format']} {a['precision']}",
                    a.get("latency_kind") == "estimated",
                    a.get("latency_kind") == "emulated"))  # issue #5: qemu-user latency, labelled
    if not pts:
        return None
    from edgecompress.report.render import _sig3, size_text  # the tables' units and digits

    _writable_mpl_config()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the label names what was plotted (a sentence encoder's cosine read "top-1 agreement")
    ms = [a.get("metrics", {}) for a in artifacts]
    ds = [a.get("drift", {}) for a in artifacts]
    ylabel = ("top-1 %" if any("top1" in m for m in ms) else "STS Spearman x100" if any("spearman" in m for m in ms)
              else "top-1 agreement with fp32 %" if any("top1_agreement" in d for d in ds)
              else "output cosine vs fp32 x100")
    ylabel_note = "diamond = estimated latency" if any(p[4] for p in pts) else ""
    fig, ax = plt.subplots(figsize=(9.5, 4.2), dpi=110)
    max_size = max(p[2] for p in pts) or 1
    front = {i for i, p in enumerate(pts)
             if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts)}
    for i, (lat, acc, size, label, est, emu) in enumerate(pts):
        # A legend, not annotations: points of equal accuracy (fp32 of two formats) overlap.
        ax.scatter(lat, acc, s=60 + 600 * size / max_size, alpha=0.55,
                   edgecolors="black" if i in front else "none", linewidths=1.5,
                   marker="D" if est else "o",
                   label=f"{label} · {size_text(size * 1e6)} · {_sig3(lat)} ms{' (est.)' if est else ''}"
                         f"{' (emulated, not a device figure)' if emu else ''}")
    for (lat, acc, *_), bar in zip(pts, bars, strict=True):
        if bar is not None:
            # clamped: the point is a rounded figure and may sit a hair outside its own interval
            ax.errorbar(lat, acc, yerr=[[max(0.0, acc - bar[0])], [max(0.0, bar[1] - acc)]], fmt="none",
                        ecolor="#57606a", elinewidth=1, capsize=3, alpha=0.7)
    # beside the axes: inside (lower left) it hid error bars and points
    legend = ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.02, 0.5), markerscale=0.4,
                       framealpha=0.9)
    for handle in legend.legend_handles:
        handle.set_sizes([40])  # type: ignore[union-attr]  # scatter handles: PathCollections
    # the thread count too: a 1-thread p50 and a 4-thread one are not the same figure
    threads = sorted({t for a in artifacts if isinstance(t := (a.get("settings") or {}).get("threads"), int)})
    on = f", {threads[0]} thread{'s' if threads[0] != 1 else ''}" if len(threads) == 1 else ""
    ax.set_xlabel(f"latency p50, batch 1{on} (ms)")
    ax.set_ylabel(ylabel)
    # the key stays in the title whatever the caller names the plot (it was replaced, unexplained)
    key = "marker area grows with size on disk; outlined = fastest for its accuracy" + (
        "; bars: 95 % interval" if any(b is not None for b in bars) else "") + (
        f"; {ylabel_note}" if ylabel_note else "")
    ax.set_title(f"{title or 'accuracy vs latency'}\n{key}", fontsize=8.5)  # two lines: it was cut off
    ax.grid(alpha=0.3)
    ys = [p[1] for p in pts]
    # at least 1 pt either side: 88.0 vs 88.1 % (one image of 700) filled the frame like a real gap
    pad = max(1.0, (max(ys) - min(ys)) * 0.25)
    bottom = min([min(ys) - pad] + [b[0] - 0.2 for b in bars if b is not None])
    top = max([max(ys) + pad] + [b[1] + 0.2 for b in bars if b is not None])
    ax.set_ylim(bottom, top)
    xs = [p[0] for p in pts]
    ax.set_xlim(0, max(xs) * 1.15)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _writable_mpl_config() -> None:
    """matplotlib wants a writable config folder (~/.config/matplotlib); with a read-only or no
    home it made a temporary one itself, after two "mkdir -p failed ... set MPLCONFIGDIR" lines in
    every report's output. We make that temporary folder without the lines; a user's
    MPLCONFIGDIR is kept."""
    import os

    if os.environ.get("MPLCONFIGDIR"):
        return
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    config = os.path.join(home, "matplotlib")
    target = config if os.path.isdir(config) else home if os.path.isdir(home) else os.path.dirname(home)
    if not os.access(target, os.W_OK | os.X_OK):
        import atexit
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="edgecompress-mpl-")
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        os.environ["MPLCONFIGDIR"] = tmp
