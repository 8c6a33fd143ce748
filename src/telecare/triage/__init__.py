"""Teletriage: protocols written as data and the engine that takes the most urgent disposition reached
(docs/triage.md), nurse triage encounters (location first, SBAR note, the disposition acted on) and patient
self-triage before booking."""
