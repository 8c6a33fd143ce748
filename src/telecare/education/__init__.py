"""Patient education: a library of short plain-language articles tagged by condition and triage
disposition, checked at load (docs/education.md). Assignment and reading are not built yet
(docs/education.md#not-built-yet)."""
