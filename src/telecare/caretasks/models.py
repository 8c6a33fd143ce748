"""Tables of the domain (filled in as it is built)."""

from __future__ import annotations
