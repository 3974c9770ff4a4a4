"""Progress bars for long offline work (tuning many families, benchmark splits, signal extraction).

rich is imported lazily and only when the output is an interactive terminal outside CI, so library
calls, tests and CI logs stay clean and rich stays an optional extra (``cli``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(requested: bool | None = None) -> bool:
    """True when a bar would help: asked for (or not refused), a TTY, not CI, rich importable."""
    if requested is False:
        return False
    if os.environ.get("CI") or os.environ.get("CONFIDENCE_ROUTER_NO_PROGRESS"):
        return False
    if not sys.stderr.isatty():
        return False
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True


def track(items: Iterable[T], description: str, *, total: int | None = None, enabled: bool | None = None
          ) -> Iterator[T]:
    """Iterate ``items``, showing a rich progress bar on stderr when :func:`progress_enabled`."""
    if not progress_enabled(enabled):
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
