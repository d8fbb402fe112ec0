"""The message bus: a ZeroMQ XSUB/XPUB broker, publishers and subscribers.

The public API is small on purpose: `Publisher(name).publish(topic, dict)` and a
`DataSubscriber(topics=[...])` subclass with `on_message(topic, data)` and `start()`.

The names are loaded on first use, so that importing a light module of the package
(`appliance.bus.spooldir`) does not load ZeroMQ into a process that carries none yet.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.bus.envelope import Envelope, Frame, Rejected
    from appliance.bus.publisher import Publisher
    from appliance.bus.subscriber import DataSubscriber, Reject

_HOME = {"Envelope": "envelope", "Frame": "envelope", "Rejected": "envelope",
         "Publisher": "publisher", "DataSubscriber": "subscriber", "Reject": "subscriber"}

__all__ = ["DataSubscriber", "Envelope", "Frame", "Publisher", "Reject", "Rejected"]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"appliance.bus.{_HOME[name]}"), name)
