"""matplotlib, imported on demand with the file-only Agg backend (plots are an optional extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend; a clear error where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'derain[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
