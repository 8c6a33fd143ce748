"""Compact membership as data, with the date it was compiled and its sources
(docs/licensure.md#compact-member-lists).

This is a snapshot, not law: re-check against nursecompact.com and psypact.gov before go-live and whenever
a state enacts or implements a compact. Where the sources disagreed or the status was unclear, the state is
left out, so the gate fails closed (no privilege) rather than open. A state listed with an effective date
only counts for visits on or after that date. IMLC is absent on purpose: an IMLC licence is an ordinary
state licence issued by that state (docs/licensure.md#compacts), stored as a `License` with source `imlc`."""

from __future__ import annotations

from datetime import date

from telecare.licensure.rules import CompactMembership, MemberState

NLC = CompactMembership(
    compact="nlc",
    as_of=date(2026, 2, 1),
    sources=(
        "en.wikipedia.org/wiki/Nurse_Licensure_Compact (participating jurisdictions as of February 2026)",
        "triagestaff.com: NLC members as of June 2024 (Guam, Pennsylvania, Washington partial)",
        "docs/licensure.md#compacts: PA implemented 2025-07-07, CT 2025-10-01, MA pending",
    ),
    members=(
        *(
            MemberState(s)
            for s in (
                "AL AZ AR CO DE FL GA ID IN IA KS KY LA ME MD MS MO MT NE NH NJ NM NC ND OH OK "
                "RI SC SD TN TX UT VT VA WV WI WY"
            ).split()
        ),
        MemberState("PA", effective_from=date(2025, 7, 7)),
        MemberState("CT", effective_from=date(2025, 10, 1)),
        # Partial implementation (June 2024 source): multistate licences from other states are honoured
        # here, but the jurisdiction does not issue multistate licences to its own residents. ⚠UV 2026.
        MemberState("WA", issues_multistate=False),
        MemberState("GU", issues_multistate=False),
        # Massachusetts: enacted, implementation pending (Feb 2026): not a member for the gate yet.
    ),
)

PSYPACT = CompactMembership(
    compact="psypact",
    as_of=date(2024, 7, 24),
    sources=(
        "southpsychology.com and drjoyzee.com copies of the psypact.gov participating-states list "
        "(enacted/effective dates), psychology.org 'PSYPACT states' (updated 2024-07-24)",
        "therapywithoutborders.org (Feb 2026): 43 jurisdictions enacted; CA, NY, MA, HI absent",
        "⚠UV: states whose effective status could not be confirmed here are left out (fail closed)",
    ),
    members=tuple(
        MemberState(s)
        for s in (
            "AL AZ AR CO CT DE DC GA ID IL IN KS KY ME MD MN MO NE NV NH NJ NC OH OK PA TN TX UT VA WA WV "
            "WI MP"
        ).split()
    ),
)

COMPACTS: dict[str, CompactMembership] = {NLC.compact: NLC, PSYPACT.compact: PSYPACT}
