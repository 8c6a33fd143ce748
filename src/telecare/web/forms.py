"""Form helpers: turn a schema's validation errors into one plain-language message per field."""

from __future__ import annotations

from pydantic import ValidationError

_PHONE = "Enter a phone number with 7 to 20 digits, e.g. +1 555 010 1234."
HINTS = {
    "email": "Enter an email address like name@example.com.",
    "phone": _PHONE,
    "emergency_contact_phone": _PHONE,
    "state": "Enter a US state as two letters, e.g. PA.",
    "postal_code": "Enter a ZIP code: 5 digits, or 5+4 like 19104-1234.",
    "preferred_language": "Enter a language code such as en or es.",
    "display_name": "Enter the name to show (1 to 100 characters).",
    "role": "Choose a role.",
    "password": "Enter an initial password of at least 12 characters.",
}


def field_errors(exc: ValidationError) -> dict[str, str]:
    """{field: message}; the first error of each field wins. Submitted values are never echoed."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "form"
        errors.setdefault(field, HINTS.get(field, str(err["msg"])))
    return errors
