"""Stored files: uploaded photos and documents, checked by content, encrypted per object (docs/files.md)."""
