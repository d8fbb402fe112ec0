"""The message bus: a ZeroMQ XSUB/XPUB broker, publishers and subscribers.

The public API is small on purpose: `Publisher(name).publish(topic, dict)` and a
`DataSubscriber(topics=[...])` subclass with `on_message(topic, data)` and `start()`.
"""

from appliance.bus.envelope import Envelope, Frame, Rejected
from appliance.bus.publisher import Publisher
from appliance.bus.subscriber import DataSubscriber, Reject

__all__ = ["DataSubscriber", "Envelope", "Frame", "Publisher", "Reject", "Rejected"]
