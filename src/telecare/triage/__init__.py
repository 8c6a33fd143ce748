"""Teletriage: protocols written as data, the engine that takes the most urgent disposition any answer
reaches, nurse triage encounters with the patient's location and an SBAR note, and patient self-triage
before booking (docs/triage.md)."""
