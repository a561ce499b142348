"""What the widget's panels share: their place in the widget, and the guard on their slots."""
from __future__ import annotations

import functools
import traceback

from BrainTumorSegModuleLib.errors import one_line


def guarded(method=None, *, stops_segmentation: bool = False):
    """Qt slots and timer callbacks: an unexpected error is one line in the module (the full text
    in the Python console), the buttons are reset, and nothing escapes into Qt's event loop. Only
    handlers of the segmentation itself (``stops_segmentation``) also stop a running segmentation.
    The decorated method's object needs ``resetAfterError`` (the widget, or a :class:`Panel`)."""
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the last line of defence of a GUI slot
                traceback.print_exc()
                self.resetAfterError(f"Error: {one_line(exc)}", stop_run=stops_segmentation)
        return wrapper
    return decorate(method) if method is not None else decorate


class Panel:
    """One section of the widget: its controls (the widget's ``ui``), the logic, and the widget
    itself for what the sections share (the timer, the last result, the error reset)."""

    def __init__(self, widget) -> None:
        self.widget = widget
        self.ui = widget.ui
        self.logic = widget.logic

    def resetAfterError(self, message: str, stop_run: bool = False) -> None:
        self.widget.resetAfterError(message, stop_run)
