"""Cell diagrams of a genotype as PNG files, drawn with matplotlib only (no graphviz).

Nodes are boxes: the two cell inputs on the left (``c_{k-2}``, ``c_{k-1}``; ``h_{k-2}``, ``h_{k-1}`` for
SeqNN cells), the intermediate nodes in the middle, the cell output (the concatenation) on the right.
Each chosen edge is an arrow labelled with its op; dashed arrows feed the output.
"""
from __future__ import annotations

import io
from pathlib import Path

from emodarts_tf.utils.io import atomic_write_bytes

_INPUT_NAMES = {"normal": ("c_{k-2}", "c_{k-1}"), "reduce": ("c_{k-2}", "c_{k-1}"), "seq": ("h_{k-2}", "h_{k-1}")}
_OUTPUT_NAME = {"normal": "c_{k}", "reduce": "c_{k}", "seq": "h_{k}"}
_COLORS = {"input": "#cfe2f3", "node": "#fff2cc", "output": "#d9ead3"}


def _layout(n_nodes: int) -> dict:
    """Positions: inputs on the left (top and bottom), the nodes on a diagonal from top left to bottom
    right, the output on the right."""
    pos = {0: (0.0, 1.3), 1: (0.0, -1.3)}
    for i in range(n_nodes):
        y = 1.3 - 2.6 * i / (n_nodes - 1) if n_nodes > 1 else 0.0
        pos[i + 2] = (2.0 + 1.6 * i, 0.8 * y)
    pos["out"] = (2.0 + 1.6 * n_nodes + 0.4, 0.0)
    return pos


def plot_cell(cell: list, concat: list, kind: str, path: str | Path, title: str | None = None) -> Path:
    """Draw one cell genotype (``[[(op, input), ...], ...]`` per node) and write it to ``path`` (PNG).

    Args:
        cell: the cell's nodes, each a list of ``(op_name, input_index)``; inputs 0 and 1 are the cell
            inputs, ``i + 2`` is node ``i``.
        concat: node indices concatenated into the output.
        kind: ``"normal"``, ``"reduce"`` or ``"seq"`` (names the inputs and the output).
        path: the PNG file (written atomically).
        title: figure title (default: the kind).
    """
    if kind not in _INPUT_NAMES:
        raise ValueError(f"kind: expected one of {sorted(_INPUT_NAMES)}, received {kind!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(cell)
    pos = _layout(n)
    width = max(5.0, 1.9 * (n + 2))
    fig = Figure(figsize=(width, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    ax.set_axis_off()
    # Fixed limits first: the edge labels are placed in display space.
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(-1.7, 1.7)

    def box(key, text, color):
        x, y = pos[key]
        ax.text(x, y, text, ha="center", va="center", fontsize=10, zorder=3,
                bbox=dict(boxstyle="round,pad=0.35", facecolor=color, edgecolor="#555555"))  # fmt: skip

    names = _INPUT_NAMES[kind]
    box(0, f"${names[0]}$", _COLORS["input"])
    box(1, f"${names[1]}$", _COLORS["input"])
    for i in range(n):
        box(i + 2, str(i), _COLORS["node"])
    box("out", f"${_OUTPUT_NAME[kind]}$", _COLORS["output"])

    for node, edges in enumerate(cell):
        dst = pos[node + 2]
        for k, (op, src_index) in enumerate(edges):
            if src_index not in pos:
                raise ValueError(f"{kind} node {node}: input index {src_index} has no node to draw")
            src = pos[src_index]
            # Curve edges that would overlap a straight one into the same node.
            rad = 0.0 if k == 0 else (0.25 if k % 2 else -0.25)
            ax.annotate("", xy=dst, xytext=src, zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color="#333333", lw=1.2, shrinkA=14, shrinkB=14,
                                        connectionstyle=f"arc3,rad={rad}"))  # fmt: skip
            # Label 60 % of the way along (closer to its node than to the crowded inputs). arc3 bends the
            # edge in display space through the control point mid + rad * (dy, -dx); the quadratic Bezier
            # at t lies 2 t (1 - t) of that offset off the chord.
            t = 0.6
            (x0, y0), (x1, y1) = ax.transData.transform([src, dst])
            dx, dy = x1 - x0, y1 - y0
            k = 2 * t * (1 - t) * rad
            lx, ly = ax.transData.inverted().transform((x0 + t * dx + k * dy, y0 + t * dy - k * dx))
            ax.text(lx, ly, op, ha="center", va="center", fontsize=8, color="#1f4e79", zorder=2,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.85))  # fmt: skip
    for idx in concat:
        if idx in pos:
            ax.annotate("", xy=pos["out"], xytext=pos[idx], zorder=1,
                        arrowprops=dict(arrowstyle="-|>", color="#888888", lw=1.0, linestyle="--",
                                        shrinkA=14, shrinkB=16))  # fmt: skip
    ax.set_title(title or f"{kind} cell", fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def genotype_diagrams(genotype, title_prefix: str = "") -> dict:
    """``{kind: (file name, title)}`` of a genotype's cell diagrams: ``normal.png``, ``reduce.png``, ``seq.png``
    (title ``"<prefix><kind> cell"``; None without a prefix: :func:`plot_cell`'s default), or for a two-stream
    genotype the cells of its streams, named after their stream: ``spectrogram_normal.png``, titled
    ``"<prefix>spectrogram normal cell"``, ..., ``frames_seq.png``."""
    streams = getattr(genotype, "stream_cells", None)
    if not streams:
        return {kind: (f"{kind}.png", f"{title_prefix}{kind} cell" if title_prefix else None)
                for kind in ("normal", "reduce", "seq")}
    return {kind: (f"{stream}_{kind}.png", f"{title_prefix}{stream} {kind} cell")
            for stream, kinds in streams.items() for kind in kinds}


def plot_genotype(genotype, out_dir: str | Path, title_prefix: str = "") -> dict:
    """The cell diagrams of :func:`genotype_diagrams` in ``out_dir``; returns ``{kind: path}``."""
    out_dir = Path(out_dir)
    return {kind: plot_cell(genotype.cell(kind), genotype.concat(kind), kind, out_dir / file, title)
            for kind, (file, title) in genotype_diagrams(genotype, title_prefix).items()}
