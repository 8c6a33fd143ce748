"""Care-team tasks: urgent work for the clinicians caring for a patient (the PHQ-9 item-9 safety task,
triage call-backs), with a deadline, acknowledgement, completion and escalation (docs/caretasks.md)."""
