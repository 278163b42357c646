"""The scaling plot (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import ScalingCurve

__all__ = ["plot_scaling"]


def plot_scaling(curves: list[ScalingCurve], path: Path) -> Path | None:
    """Log-log time against T and against N, one line per model, with a slope-1 guide.

    Returns:
        The file written, or None when there is no curve.
    """
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axes_names = sorted({c.axis for c in curves}, key=lambda a: "TN".find(a))
    fig, axes = plt.subplots(1, len(axes_names), figsize=(5.5 * len(axes_names), 4.2),
                             squeeze=False)
    for ax, axis in zip(axes[0], axes_names, strict=True):
        for c in (c for c in curves if c.axis == axis):
            (line,) = ax.loglog(c.sizes, c.seconds, "o-",
                                label=f"{c.task} ({c.fixed}), slope {c.slope:.2f} "
                                f"(upper half {c.upper_slope:.2f})")
            x0, y0 = c.sizes[0], c.seconds[0]
            ax.loglog([x0, c.sizes[-1]], [y0, y0 * c.sizes[-1] / x0], ":",
                      color=line.get_color(), alpha=0.6)
        sizes = sorted({s for c in curves if c.axis == axis for s in c.sizes})
        ax.set_xticks(sizes)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{axis} ({'sequence length' if axis == 'T' else 'number of sequences'})")
        ax.set_ylabel("seconds per log_prob call (median)")
        ax.set_title(f"time against {axis} (dotted: linear)")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
