"""Teletriage: protocols written as data and the engine that takes the most urgent disposition any answer
reaches (docs/triage.md). Nurse triage encounters and patient self-triage are not built yet
(docs/triage.md#nurse-triage)."""
