"""ICE servers for the browsers: STUN/TURN URLs from settings, TURN credentials short-lived.

TURN credentials follow the TURN REST API shared-secret scheme (draft-uberti-behave-turn-rest-00, as
implemented by coturn's `use-auth-secret` / `static-auth-secret`): username = "<expiry unix time>:<user tag>",
credential = base64(HMAC-SHA1(shared secret, username)). The TURN server recomputes the HMAC and refuses the
username once its time has passed, so a leaked credential stops working on its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from telecare.config import Settings
from telecare.core.time import utc_now


@dataclass(frozen=True)
class TurnCredential:
    username: str
    credential: str
    expires_at: int  # unix time


def turn_credential(
    secret: str, user_tag: str, *, ttl_seconds: int, now: int | None = None
) -> TurnCredential:
    """`user_tag` names the caller without personal data (e.g. "u42", "g7")."""
    expires = (now if now is not None else int(utc_now().timestamp())) + ttl_seconds
    username = f"{expires}:{user_tag}"
    # HMAC-SHA1 is what the TURN REST scheme specifies; it is a MAC here, not a password hash.
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode(), expires)


def ice_servers(settings: Settings, user_tag: str) -> dict[str, Any]:
    """The RTCConfiguration fragment a browser passes to `new RTCPeerConnection(...)`."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    ttl = settings.turn_ttl_seconds
    if settings.turn_urls and settings.turn_secret is not None:
        cred = turn_credential(settings.secret("turn_secret"), user_tag, ttl_seconds=ttl)
        servers.append(
            {"urls": list(settings.turn_urls), "username": cred.username, "credential": cred.credential}
        )
    return {"iceServers": servers, "ttl": ttl}
