"""Who is calling: principals, HTTP and WebSocket authentication, sessions, API tokens, TOTP."""
