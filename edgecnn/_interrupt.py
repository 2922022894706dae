"""A Ctrl-C that is never lost.

Python raises KeyboardInterrupt in whatever the main thread runs when the signal arrives; inside a
``__del__`` or a weakref callback (the garbage collector runs them during imports and tracing) it is
printed as "Exception ignored" and the work goes on as if nothing happened. The CLI's handler also
records the interrupt, and ``raise_if_interrupted`` raises it again where finished work would be kept.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_interrupted = False


def install() -> None:
    """Record every SIGINT before raising KeyboardInterrupt as Python's own handler does."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if a Ctrl-C arrived since ``install``, even one that was swallowed."""
    if _interrupted:
        raise KeyboardInterrupt
