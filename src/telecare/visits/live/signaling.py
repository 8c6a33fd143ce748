"""WebRTC signaling messages: what a browser may send, how it is checked, and how it travels.

A visit's room is the event-bus topic `signal.<appointment id>` (`core.events`): in-process on SQLite, and
PostgreSQL LISTEN/NOTIFY across workers, so two participants connected to different workers still meet.
Every client frame is size-limited, parsed and validated against the models below before anything is relayed;
a bad frame gets an `error` reply to its sender only and the room carries on. Relayed messages reach only the
sockets subscribed to the same appointment's topic, and only the addressee when `to` is set.

Peer ids are `u<user id>` for signed-in participants and `g<participant id>` for invited guests: they carry
no names, so they are safe in logs and in the relay payload."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from telecare.scheduling.models import Modality
from telecare.visits.models import ModalityChangeReason

# Chrome's audio+video offers are 4-8 KB; 16 KB leaves room for simulcast and extra codecs while keeping a
# compressed SDP under PostgreSQL's 8,000-byte NOTIFY limit.
MAX_SDP_CHARS = 16_000
MAX_FRAME_BYTES = 20_000
MAX_CANDIDATE_CHARS = 1_000
PEER_ID = r"^[ug][0-9]{1,12}$"
# A sender may burst (a burst of trickled candidates) but not flood the room.
RATE_PER_SECOND = 50.0
RATE_BURST = 200.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Description(_Strict):
    type: Literal["offer", "answer"]
    to: str = Field(pattern=PEER_ID)
    sdp: str = Field(min_length=10, max_length=MAX_SDP_CHARS)


class IceCandidate(_Strict):
    candidate: str = Field(max_length=MAX_CANDIDATE_CHARS)
    sdpMid: str | None = Field(default=None, max_length=64)  # noqa: N815 - the WebRTC field name
    sdpMLineIndex: int | None = Field(default=None, ge=0, le=64)  # noqa: N815
    usernameFragment: str | None = Field(default=None, max_length=256)  # noqa: N815


class Candidate(_Strict):
    type: Literal["candidate"]
    to: str = Field(pattern=PEER_ID)
    candidate: IceCandidate | None  # None: end of candidates


class Bye(_Strict):
    type: Literal["bye"]


class ModalityRequest(_Strict):
    """Switch the visit between video and audio only (recorded with its reason: modifier 93 vs 95)."""

    type: Literal["modality"]
    modality: Literal[Modality.VIDEO, Modality.AUDIO]
    reason: ModalityChangeReason


class Connected(_Strict):
    """The sender's media is flowing (first ICE `connected`): the visit's documented start."""

    type: Literal["connected"]


ClientMessage = Annotated[
    Description | Candidate | Bye | ModalityRequest | Connected, Field(discriminator="type")
]
AnyMessage = Description | Candidate | Bye | ModalityRequest | Connected
_adapter: TypeAdapter[AnyMessage] = TypeAdapter(ClientMessage)


class BadMessage(Exception):
    """A frame that is not a valid signaling message; `detail` is safe to send back (no echo of input)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse(frame: str | bytes) -> AnyMessage:
    raw = frame.encode() if isinstance(frame, str) else frame
    if len(raw) > MAX_FRAME_BYTES:
        raise BadMessage("too_large", f"A signaling message is at most {MAX_FRAME_BYTES} bytes.")
    try:
        data = json.loads(raw)
    except ValueError:
        raise BadMessage("not_json", "A signaling message is a JSON object.") from None
    if not isinstance(data, dict):
        raise BadMessage("not_object", "A signaling message is a JSON object.")
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"][1:] or e["loc"]) or "type" for e in exc.errors()})
        raise BadMessage("invalid", "Invalid signaling message: check " + ", ".join(fields) + ".") from None


def relayed(message: Description | Candidate) -> dict[str, Any]:
    """What the addressee receives (the server's own fields are added by the socket: `from`)."""
    return message.model_dump(exclude={"to"}, mode="json")


class TokenBucket:
    def __init__(self, rate: float = RATE_PER_SECOND, burst: float = RATE_BURST) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, 0.0

    def take(self, now: float) -> bool:
        if self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# ---- the bus envelope --------------------------------------------------------------------------------
# NOTIFY payloads must stay under 8,000 bytes (core.events.MAX_NOTIFY_BYTES): SDP is compressed when large.

COMPRESS_ABOVE = 3_000


def room_topic(appointment_id: int) -> str:
    return f"signal.{appointment_id}"


def envelope(
    *, sender: str, conn: str, to: str | None, message: dict[str, Any], compress: bool = True
) -> dict[str, Any]:
    """The bus payload; `compress` where it crosses PostgreSQL NOTIFY (in-process delivery needs none)."""
    body = json.dumps(message, separators=(",", ":")) if compress else ""
    if compress and len(body) > COMPRESS_ABOVE:
        packed = base64.b64encode(zlib.compress(body.encode(), 9)).decode()
        return {"sig": None, "z": packed, "from": sender, "conn": conn, "to": to}
    return {"sig": message, "from": sender, "conn": conn, "to": to}


def open_envelope(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The message inside a bus payload, or None when the payload is not a signaling envelope."""
    if "from" not in payload or "conn" not in payload:
        return None
    if payload.get("z"):
        message: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode(payload["z"])))
        return message
    sig = payload.get("sig")
    return sig if isinstance(sig, dict) else None
