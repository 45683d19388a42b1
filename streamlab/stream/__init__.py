"""Stream transport: frames, the wire protocol, ZeroMQ publishers and sources, and paced playback.

Nothing here knows about learners or stores."""

from streamlab.stream.playback import play, play_session
from streamlab.stream.protocol import Control, Frame, Message, Reject, decode, encode
from streamlab.stream.transport import Event, Gap, Publisher, Rejection, ZmqSource

__all__ = [
    "Control",
    "Event",
    "Frame",
    "Gap",
    "Message",
    "Publisher",
    "Reject",
    "Rejection",
    "ZmqSource",
    "decode",
    "encode",
    "play",
    "play_session",
]
