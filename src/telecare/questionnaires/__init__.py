"""Questionnaires: FHIR Questionnaire definitions shipped in the package, assignments once or on a schedule,
answers saved as they are given (QuestionnaireResponse), scoring and derived observations, and the PHQ-9
item-9 safety rule (docs/questionnaires.md)."""
