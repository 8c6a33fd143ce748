"""Patient education: a library of short plain-language articles tagged by condition and triage
disposition, checked at load; clinicians give articles to patients and the patient's reading is recorded
(docs/education.md)."""
