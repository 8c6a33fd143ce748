"""The real-time half of a visit: the live waiting room, WebRTC signaling, ICE servers and guest invitations.

The visit's state machine lives in `telecare.visits.service`; everything here calls it. The server relays
signaling messages between a visit's participants and never sees media (browsers connect peer to peer, or
through the TURN relay named in settings)."""
