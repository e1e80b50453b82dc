"""Tables and plots from results files.

* :func:`print_summary`: the figures of one run (rich tables: the summary,
  then one row per phase);
* :func:`compare`: the main per-connection figures of several runs side by
  side, as ratios to a baseline run (e.g. rtcore against a bare WebSocket
  server measured the same way);
* :func:`plot`: per results file, ``<stem>-timeline.png`` (connections,
  server and client CPU, server RSS over time, phases shaded) and
  ``<stem>-latency.png`` (the latency distributions recorded, as CDFs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from histogram import bucket_value
from rich.console import Console
from rich.table import Table


__all__ = ["compare", "load", "plot", "print_summary"]

# The figures compare() puts side by side (lower is better for all of them).
COMPARED = [
    "server_cpu_us_per_connection",
    "server_rss_kib_per_connection",
    "hold_server_cpu_us_per_connection_per_s",
    "server_cpu_us_per_delivery",
    "last_recovered_s",
]


# What each histogram of a results file measures.
LABELS = {
    "connect_us": "connect: TCP connect to subscribe reply",
    "recovery_us": "storm: reconnect signal to recovered reply",
    "recovery_tcp_us": "storm: reconnect signal to TCP connection up",
    "recovery_upgrade_us": "storm: reconnect signal to the 101",
    "connect_tcp_us": "connect: TCP connection up",
    "connect_upgrade_us": "connect: TCP connect to the 101",
    "latency_us": "publish to receive",
    "api_publish_us": "server API publish request",
    "api_probe_us": "server API publish probe during the reconnect",
    "api_info_us": "server API info probe during the reconnect",
}


def load(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("tool") != "bench.loadgen":
        raise ValueError(f"{path}: not a results file of bench.loadgen")
    return data


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _flat(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, dict) and not value:
        return "none"
    return str(value)


def print_summary(data: dict[str, Any], console: Console) -> None:
    server = data.get("server", {})
    title = (
        f"{data['scenario']}: {data['args'].get('connections')} connections, "
        f"{data['args'].get('format')}, {server.get('engine', '?')} engine, "
        f"{server.get('workers', 1)} worker(s) - {'OK' if data.get('ok') else 'FAILED'}"
    )
    table = Table(title=title, show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in _flat("", data.get("summary", {})):
        table.add_row(key, _fmt(value))
    console.print(table)
    phases = Table(title="phases", show_header=True)
    for col in ("phase", "s", "server CPU s", "server CPU %", "server RSS MiB", "clients CPU s"):
        phases.add_column(col, justify="left" if col == "phase" else "right")
    for ph in data.get("phases", []):
        srv = ph.get("server") or {}
        phases.add_row(
            ph["name"],
            _fmt(ph.get("seconds")),
            _fmt(srv.get("cpu_s")),
            _fmt(srv.get("cpu_pct")),
            _fmt(round(srv["rss_end"] / 2**20, 1) if srv.get("rss_end") else None),
            _fmt(ph.get("clients_cpu_s")),
        )
    console.print(phases)
    for problem in data.get("problems", []):
        console.print(f"[red]problem:[/red] {problem}")


def compare(
    runs: list[tuple[str, dict[str, Any]]], baseline: dict[str, Any], console: Console
) -> None:
    """The :data:`COMPARED` figures of each run and their ratio to ``baseline``'s."""
    table = Table(title="compared with the baseline (ratio: run / baseline)")
    table.add_column("figure")
    table.add_column("baseline", justify="right")
    for name, _ in runs:
        table.add_column(name, justify="right")
    base = baseline.get("summary", {})
    for key in COMPARED:
        if all(data.get("summary", {}).get(key) is None for _, data in runs):
            continue
        row = [key, _fmt(base.get(key))]
        for _, data in runs:
            value = data.get("summary", {}).get(key)
            ref = base.get(key)
            if value is None:
                row.append("-")
            elif ref:
                row.append(f"{_fmt(value)} ({value / ref:.2f}x)")
            else:
                row.append(_fmt(value))
        table.add_row(*row)
    console.print(table)


def _cdf(hist: dict[str, int]) -> tuple[list[float], list[float]]:
    items = sorted((int(k), n) for k, n in hist.items())
    total = sum(n for _, n in items) or 1
    xs, ys, seen = [], [], 0
    for idx, n in items:
        seen += n
        xs.append(bucket_value(idx) / 1000)
        ys.append(seen / total * 100)
    return xs, ys


def plot(path: str | Path, outdir: str | Path) -> list[Path]:
    """Write the PNGs of one results file into ``outdir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load(path)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    written: list[Path] = []
    timeline = data.get("timeline", [])
    title = f"{data['scenario']} - {data['args'].get('connections')} connections"
    if timeline:
        fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
        t = [row["t"] for row in timeline]
        axes[0].plot(t, [row["ready"] for row in timeline], label="ready")
        if any(row.get("recovered") for row in timeline):
            axes[0].plot(t, [row["recovered"] for row in timeline], label="recovered")
        if any(row.get("failed") for row in timeline):
            axes[0].plot(t, [row["failed"] for row in timeline], label="failed")
        axes[0].set_ylabel("connections")
        axes[0].legend(loc="upper left")
        axes[1].plot(
            t, [row.get("server_cpu_pct") for row in timeline], label="server (all processes)"
        )
        axes[1].plot(t, [row["clients_cpu_pct"] for row in timeline], label="clients")
        axes[1].set_ylabel("CPU % of one core")
        axes[1].legend(loc="upper left")
        rss = [row.get("server_rss") for row in timeline]
        axes[2].plot(t, [r / 2**20 if r else None for r in rss], label="server RSS")
        axes[2].set_ylabel("server RSS (MiB)")
        axes[2].set_xlabel("seconds")
        for i, ph in enumerate(data.get("phases", [])):
            for ax in axes:
                ax.axvspan(
                    ph["start_s"], ph["start_s"] + ph["seconds"], alpha=0.06 + 0.06 * (i % 2)
                )
            axes[0].text(
                ph["start_s"],
                0.98,
                ph["name"],
                transform=axes[0].get_xaxis_transform(),
                rotation=90,
                va="top",
                fontsize=8,
            )
        fig.suptitle(title)
        fig.tight_layout()
        target = out / f"{stem}-timeline.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    hists = {k: v for k, v in data.get("histograms", {}).items() if v}
    if hists:
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, hist in hists.items():
            xs, ys = _cdf(hist)
            ax.step(xs, ys, where="post", label=LABELS.get(name, name))
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds")
        ax.set_ylabel("% at or below")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        ax.set_title(title)
        fig.tight_layout()
        target = out / f"{stem}-latency.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    return written
