"""Telecare: an open-source virtual-care platform."""

__version__ = "0.1.0"
