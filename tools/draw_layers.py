"""Draw docs/img/layers.png: the layers of src/rtcore and the imports between them.

    python tools/draw_layers.py [OUT.png]

Boxes are units (a subpackage, or a group of top-level modules), stacked by
layer as tools/layers.py defines them; a box's label gives its modules and
lines of code; arrows are imports between units, thicker for more of them. Needs
matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import matplotlib


matplotlib.use("Agg")
import layers  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent
# Top-level modules drawn as one box each: the two compiled cores with their
# twins and facades, and what everything shares.
GROUPS = {
    "_frames": "frames core",
    "_frames_py": "frames core",
    "_frames_mask": "frames core",
    "_frames_utf8": "frames core",
    "frames": "frames core",
    "_fanout": "fan-out core",
    "_fanout_py": "fan-out core",
    "fanout": "fan-out core",
    "errors": "errors",
    "_impl": "errors",
    "_version": "errors",
    "__init__": "public API",
    "__main__": "public API",
    "examples": "examples",
}
BOX_ORDER = [
    "frames core",
    "fan-out core",
    "errors",
    "wire",
    "protocol",
    "auth",
    "config",
    "engine",
    "backends",
    "transports",
    "server",
    "examples",
    "public API",
]
COLOURS = ["#dbe9f6", "#d6f0dd", "#fbe8c8", "#f7d6d6", "#e6dcf3", "#f3e3ec", "#eeeeee"]


def box_of(unit: str) -> str:
    return GROUPS.get(unit, unit)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img" / "layers.png"
    size: Counter[str] = Counter()
    files: Counter[str] = Counter()
    layer_of: dict[str, int] = {}
    for path in layers.sources():
        unit = layers.unit_of(layers.module_name(path))
        box = box_of(unit)
        size[box] += len(path.read_text().splitlines())
        files[box] += 1
        layer_of[box] = layers.LAYERS[unit]
    arrows: Counter[tuple[str, str]] = Counter()
    for a, b, _ in layers.edges():
        # Every layer raises the shared exceptions: those arrows would only hide the rest.
        if box_of(a) != box_of(b) and box_of(b) != "errors":
            arrows[box_of(a), box_of(b)] += 1

    rows: dict[int, list[str]] = {}
    for box in BOX_ORDER:
        if box in layer_of:
            rows.setdefault(layer_of[box], []).append(box)
    width, row_h, box_w, box_h = 12.0, 1.6, 2.3, 0.8
    pos: dict[str, tuple[float, float]] = {}
    fig, ax = plt.subplots(figsize=(12, 1.6 * len(rows) + 0.6), dpi=110)
    for i, (layer, boxes) in enumerate(sorted(rows.items())):
        y = i * row_h
        ax.add_patch(
            FancyBboxPatch(
                (-1.9, y - row_h / 2 + 0.12),
                width + 1.8,
                row_h - 0.24,
                boxstyle="round,pad=0.02",
                fc=COLOURS[layer % len(COLOURS)],
                ec="none",
                alpha=0.55,
            )
        )
        ax.text(
            -1.8,
            y,
            f"{layer}  {layers.LAYER_NAMES[layer]}",
            va="center",
            fontsize=9,
            color="#444444",
        )
        step = (width - 1.0) / len(boxes)
        for j, box in enumerate(boxes):
            x = 1.3 + step * (j + 0.5)
            pos[box] = (x, y)
            ax.add_patch(
                FancyBboxPatch(
                    (x - box_w / 2, y - box_h / 2),
                    box_w,
                    box_h,
                    boxstyle="round,pad=0.03",
                    fc="white",
                    ec="#333333",
                    lw=1.2,
                )
            )
            ax.text(x, y + 0.12, box, ha="center", va="center", fontsize=11, weight="bold")
            ax.text(
                x,
                y - 0.2,
                f"{files[box]} files · {size[box]:,} lines",
                ha="center",
                va="center",
                fontsize=8,
                color="#555555",
            )
    for (a, b), n in sorted(arrows.items()):
        (xa, ya), (xb, yb) = pos[a], pos[b]
        same_row = ya == yb
        start = (
            (xa, ya - box_h / 2)
            if not same_row
            else (xa + (box_w / 2 if xb > xa else -box_w / 2), ya)
        )
        end = (
            (xb, yb + box_h / 2)
            if not same_row
            else (xb - (box_w / 2 if xb > xa else -box_w / 2), yb)
        )
        ax.add_patch(
            FancyArrowPatch(
                start,
                end,
                arrowstyle="-|>",
                mutation_scale=10,
                lw=0.5 + min(n, 40) / 20,
                color="#3a5f8a",
                alpha=0.55,
                connectionstyle="arc3,rad=0.08",
            )
        )
    ax.set_xlim(-2.0, width + 0.1)
    ax.set_ylim(-row_h / 2, (len(rows) - 0.5) * row_h)
    ax.axis("off")
    ax.set_title(
        "rtcore: layers and imports (arrow: importer → imported; imports of errors not drawn)",
        fontsize=11,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}: {len(pos)} boxes, {sum(arrows.values())} imports between them")


if __name__ == "__main__":
    main()
