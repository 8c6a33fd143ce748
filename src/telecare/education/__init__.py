"""Patient education: a library of short plain-language articles tagged by condition and triage disposition,
assignment by clinicians, reading in the portal (docs/education.md)."""
