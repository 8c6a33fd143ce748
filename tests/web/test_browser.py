"""End-to-end browser journeys through the real server with the demo organization.

Demo facts used here (identity/demo.py): patient i (id i + 1) is Ava Alvarez for i = 0; even patients are on
Dr. Rivera's team, odd ones on Dr. Chen's, except every tenth (i % 10 == 9) has no care team; patient 2 is
Omar Haddad (Dr. Chen's)."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.web.conftest import DemoServer, demo_email

RIVERA_PATIENTS = 25
ALL_PATIENTS = 50
AVA_ID, OMAR_ID = 1, 2


def chart_sections(page: Any) -> list[str]:
    """The chart's section keys in display order (waits for the chart to render first)."""
    expect(page.locator("[data-section=contact]")).to_be_visible()
    return [
        str(k) for k in page.locator("[data-section]").evaluate_all("els => els.map(e => e.dataset.section)")
    ]


def test_clinician_enrols_totp_then_answers_the_challenge_and_sees_only_their_patients(
    tabs: Any, demo_server: DemoServer
) -> None:
    tab = tabs()
    page = tab.page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.get_by_role("heading", name="Sign in to Telecare")).to_be_visible()
    tab.shot("login")

    # First sign-in: password, then the enrolment page with a locally rendered QR code.
    page.get_by_label("Email").fill(demo_email("dr.rivera"))
    page.get_by_label("Password").fill("Demo-dr-rivera-2026")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/login/enrol$"))
    expect(page.locator(".qr svg path")).to_have_count(1)
    assert page.locator("img[src^='http'], script[src^='http'], link[href^='http']").count() == 0
    from telecare.identity.demo import demo_totp_secret

    expect(page.get_by_test_id("totp-secret")).to_have_text(demo_totp_secret(demo_email("dr.rivera")))
    tab.shot("enrol")
    page.get_by_label("6-digit code").fill("000000")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("alert")).to_contain_text("That code is not valid")
    page.get_by_label("6-digit code").fill(demo_server.totp(demo_email("dr.rivera")))
    page.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(re.compile(r"/home$"))
    # The navigation carries the visits and monitoring links their role is granted.
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        [
            "My patients",
            "Visits",
            "Waiting room",
            "Tasks",
            "Messages",
            "E-consults",
            "Questionnaires",
            "Skin concerns",
            "Monitoring",
            "RPM billing",
        ]
    )

    # Their care-team patients only.
    expect(page.get_by_role("heading", name="My patients")).to_be_visible()
    expect(page.get_by_test_id("patient-count")).to_contain_text(f"of {RIVERA_PATIENTS} patients")
    expect(page.get_by_role("link", name="Alvarez, Ava")).to_be_visible()
    expect(page.get_by_role("link", name="Haddad, Omar")).to_have_count(0)
    tab.shot("patients")
    page.get_by_label("Find a patient by name").fill("Haddad")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("patient-count")).to_contain_text("No patients match")
    page.get_by_label("Find a patient by name").fill("alvarez")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="Alvarez, Ava")).to_be_visible()

    # The chart shell: the foundation's sections, then the patient's visits and remote monitoring.
    page.get_by_role("link", name="Alvarez, Ava").click()
    expect(page).to_have_url(re.compile(rf"/patients/{AVA_ID}$"))
    expect(page.get_by_role("heading", name="Alvarez, Ava", level=1)).to_be_visible()
    assert chart_sections(page) == [
        "contact",
        "care-team",
        "visits",
        "monitoring",
        "messages",
        "econsults",
        "skin",
        "questionnaires",
        "triage",
        "education",
        "tasks",
    ]
    care_team = page.locator("[data-section=care-team]")
    expect(care_team).to_contain_text("Dr. Elena Rivera, MD")
    expect(care_team).to_contain_text("Grace Okafor, RN")
    expect(page.locator("[data-section=visits]")).to_contain_text("No visits yet.")
    expect(page.locator("[data-section=visits]")).not_to_contain_text("Book a visit")
    tab.shot("chart")
    # Ava is enrolled in RPM (demo: hypertension and diabetes): the section leads to her readings.
    page.locator("[data-section=monitoring]").get_by_role(
        "link", name="Open readings, charts and targets"
    ).click()
    expect(page).to_have_url(re.compile(rf"/monitoring/patients/{AVA_ID}$"))
    expect(page.get_by_role("heading", name="Alvarez, Ava: remote monitoring")).to_be_visible()
    tab.shot("monitoring")

    # Another physician's patient is not shown; the page offers break-the-glass instead.
    page.goto(f"/patients/{OMAR_ID}")
    expect(page.get_by_role("heading", name="This patient is not on your care list")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Haddad")

    # Sign out; the next sign-in goes to the TOTP challenge, where a replayed code is refused.
    tab.sign_out()
    page.goto("/home")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("Email").fill(demo_email("dr.rivera"))
    page.get_by_label("Password").fill("Demo-dr-rivera-2026")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/login/totp$"))
    tab.shot("challenge")
    page.get_by_label(re.compile("6-digit code")).fill(demo_server.last_code(demo_email("dr.rivera")))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("each code can be used once")
    page.get_by_label(re.compile("6-digit code")).fill(demo_server.totp(demo_email("dr.rivera")))
    page.get_by_role("button", name="Verify").click()
    expect(page).to_have_url(re.compile(r"/home$"))
    expect(page.get_by_role("link", name="Alvarez, Ava")).to_be_visible()


def test_patient_sees_only_their_own_record_and_edits_contact_details(
    tabs: Any, demo_server: DemoServer
) -> None:
    tab = tabs()
    page = tab.page
    tab.sign_in("patient", expect="password-only")
    expect(page.get_by_role("heading", name="Hello, Ava")).to_be_visible()
    expect(page.get_by_test_id("mrn")).to_have_text("RB10001")
    expect(page.get_by_role("region", name="My care team")).to_contain_text("Dr. Elena Rivera")
    tab.shot("home")

    # Someone else's chart and the staff list answer with friendly error pages, without data.
    page.goto(f"/patients/{OMAR_ID}")
    expect(page.get_by_role("heading", name="Patient not found")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Haddad")
    tab.shot("other-patient")
    page.goto("/patients")
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
    expect(page.locator("body")).to_contain_text("does not have access")

    # Edit contact details: a bad ZIP is named and nothing is saved; a good change shows on the home page.
    page.goto("/me/contact")
    page.get_by_label("Phone", exact=True).fill("+1 555 777 1234")
    page.get_by_label("ZIP code").fill("ABC")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_label("ZIP code")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#postal_code-error")).to_contain_text("Enter a ZIP code")
    tab.shot("contact-error")
    page.goto("/home")
    expect(page.get_by_test_id("phone")).not_to_have_text("+1 555 777 1234")
    page.goto("/me/contact")
    page.get_by_label("Phone", exact=True).fill("+1 555 777 1234")
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/home\?saved=1$"))
    expect(page.get_by_role("status")).to_contain_text("saved")
    expect(page.get_by_test_id("phone")).to_have_text("+1 555 777 1234")

    # A forged form post without the CSRF token is refused.
    cookies = {c["name"]: c["value"] for c in tab.context.cookies()}
    r = httpx.post(
        f"{demo_server.url}/me/contact", data={"phone": "+1 555 000 0000", "state": "PA"}, cookies=cookies
    )
    assert r.status_code == 403
    assert "CSRF" in r.text
    page.reload()
    expect(page.get_by_test_id("phone")).to_have_text("+1 555 777 1234")


def test_coordinator_sees_contact_data_of_all_patients_but_no_clinical_sections(
    tabs: Any, demo_server: DemoServer
) -> None:
    tab = tabs()
    page = tab.page
    tab.sign_in("coord.james")
    expect(page.get_by_role("heading", name="Patient contacts")).to_be_visible()
    # Scheduling links; no clinical (visits queue, monitoring) ones.
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Patient contacts", "Statistics", "Calendar", "Coverage", "Billing", "Response times"]
    )
    headers = page.locator("table.patients thead th")
    expect(headers).to_have_text(["Name", "MRN", "Phone", "Email", "State"])
    expect(page.get_by_test_id("patient-count")).to_contain_text(f"Showing 1–25 of {ALL_PATIENTS}")
    tab.shot("contacts")
    page.get_by_role("link", name="Next page").click()
    expect(page.get_by_test_id("patient-count")).to_contain_text(f"Showing 26–50 of {ALL_PATIENTS}")
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    # Patients without a care team (and Dr. Chen's) are reachable for scheduling.
    page.goto(f"/patients/{OMAR_ID}")
    expect(page.get_by_role("heading", name="Haddad, Omar", level=1)).to_be_visible()
    # Contact, care team and visits (scheduling data); Omar is enrolled in RPM (demo: heart failure), but
    # the monitoring section is clinical and never shown to a coordinator.
    assert chart_sections(page) == ["contact", "care-team", "visits"]
    expect(page.locator("[data-section=contact]")).to_contain_text("+1 555 0101 1001")
    expect(page.locator("[data-section=visits]")).to_contain_text("Book a visit for this patient")
    expect(page.locator("body")).not_to_contain_text("Remote monitoring")
    expect(page.locator("a[href^='/monitoring']")).to_have_count(0)
    tab.shot("chart")
    page.goto(f"/monitoring/patients/{OMAR_ID}")
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Haddad")
    # Admin pages are not theirs.
    page.goto("/admin/users")
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()


def test_the_api_documentation_renders_from_this_server(tabs: Any, demo_server: DemoServer) -> None:
    """Swagger UI at /docs, served locally under the CSP (a console error fails the test), shows the API's
    operations: its version must read the OpenAPI 3.1 that FastAPI writes."""
    tab = tabs()
    page = tab.page
    page.goto("/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Unable to render this definition")
    one_patient = page.locator(".opblock-summary-path", has_text="/api/v1/patients/{patient_id}")
    expect(one_patient.first).to_be_visible()


def test_informatics_sees_aggregate_counts_only(tabs: Any, demo_server: DemoServer) -> None:
    tab = tabs()
    page = tab.page
    tab.sign_in("info.patel")
    expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Home", "Statistics"]
    )
    page.get_by_role("link", name="Statistics").first.click()
    expect(page.get_by_role("heading", name="Patients by home state")).to_be_visible()
    counts = [int(c) for c in page.locator("table.stats tbody td:nth-child(2)").all_inner_texts()]
    assert sum(counts) == ALL_PATIENTS
    expect(page.locator("table.stats caption")).to_contain_text(f"{ALL_PATIENTS} patients in 8 states")
    tab.shot("stats")
    page.goto(f"/patients/{AVA_ID}")
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Alvarez")


def test_admin_disables_a_user_and_their_open_session_is_thrown_out(
    tabs: Any, demo_server: DemoServer
) -> None:
    nurse = tabs("nurse")
    nurse.sign_in("nurse.garcia")
    expect(nurse.page.get_by_role("heading", name="My patients")).to_be_visible()

    admin = tabs("admin")
    admin.sign_in("admin")
    page = admin.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    row = page.locator(f"tr[data-email='{demo_email('nurse.garcia')}']")
    expect(row.locator("td.status")).to_have_text("Active")
    row.get_by_role("button", name=f"Disable {demo_email('nurse.garcia')}").click()
    expect(row.locator("td.status")).to_have_text("Disabled")
    admin.shot("disabled")

    # The nurse's next click lands on the sign-in page; the password no longer works.
    nurse.page.reload()
    expect(nurse.page).to_have_url(re.compile(r"/login$"))
    nurse.page.get_by_label("Email").fill(demo_email("nurse.garcia"))
    nurse.page.get_by_label("Password").fill("Demo-nurse-garcia-2026")
    nurse.page.get_by_role("button", name="Sign in").click()
    expect(nurse.page.get_by_role("alert")).to_contain_text("not correct")
    nurse.shot("refused")

    row.get_by_role("button", name=f"Enable {demo_email('nurse.garcia')}").click()
    expect(row.locator("td.status")).to_have_text("Active")

    # Create a user: only roles within the admin's own access are offered (clinical accounts are the
    # operator's, `telecare users create`); a bad email is named; a good form adds the user to the list.
    page.get_by_role("link", name="Create a user").click()
    expect(page.get_by_label("Role").locator("option[value=nurse]")).to_have_count(0)
    expect(page.locator("#role-hint")).to_contain_text("telecare users create")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Display name").fill("Sam Fields")
    page.get_by_label("Role").select_option("informatics")
    page.get_by_label("Initial password").fill("a-long-initial-password")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#email-error")).to_contain_text("Enter an email address")
    page.get_by_label("Email").fill("sam.fields@riverbend.example")
    page.get_by_label("Initial password").fill("a-long-initial-password")
    page.get_by_role("button", name="Create user").click()
    new_row = page.locator("tr[data-email='sam.fields@riverbend.example']")
    expect(new_row).to_contain_text("Informatics")
    expect(new_row).to_contain_text("Pending")


def test_break_the_glass_opens_one_record_for_a_clinician_outside_the_care_team(
    tabs: Any, demo_server: DemoServer
) -> None:
    tab = tabs("chen")
    page = tab.page
    tab.sign_in("dr.chen")
    expect(page.get_by_role("link", name="Alvarez, Ava")).to_have_count(0)
    page.goto(f"/patients/{AVA_ID}")
    expect(page.get_by_role("heading", name="This patient is not on your care list")).to_be_visible()
    expect(page.locator("body")).not_to_contain_text("Alvarez")
    tab.shot("form")

    page.get_by_label("Emergency reason").fill("too short")
    page.get_by_label("Re-enter your password").fill("Demo-dr-chen-2026")
    page.get_by_role("button", name="Open record in emergency").click()
    expect(page.get_by_role("alert")).to_contain_text("at least 10 characters")
    page.get_by_label("Emergency reason").fill("Covering for Dr. Rivera: patient unresponsive on call")
    page.get_by_label("Re-enter your password").fill("wrong password")
    page.get_by_role("button", name="Open record in emergency").click()
    expect(page.get_by_role("alert")).to_contain_text("re-enter your password")
    expect(page.locator("body")).not_to_contain_text("Alvarez")

    page.get_by_label("Re-enter your password").fill("Demo-dr-chen-2026")
    page.get_by_role("button", name="Open record in emergency").click()
    expect(page).to_have_url(re.compile(rf"/patients/{AVA_ID}$"))
    expect(page.get_by_role("heading", name="Alvarez, Ava", level=1)).to_be_visible()
    expect(page.get_by_test_id("emergency-banner")).to_contain_text("emergency access")
    tab.shot("chart")
    # The emergency patient joins the list for the grant's lifetime; other patients stay hidden.
    page.goto("/home")
    expect(page.get_by_role("link", name="Alvarez, Ava")).to_be_visible()
    expect(page.get_by_role("link", name="Ortega, Rosa")).to_have_count(0)

    # The privacy review list shows the access with its reason.
    admin = tabs("admin")
    admin.sign_in("admin")
    admin.page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Emergency access review"
    ).click()
    row = admin.page.locator("table.break-glass tbody tr").first
    expect(row).to_contain_text("Dr. Wei Chen")
    expect(row).to_contain_text(f"#{AVA_ID}")
    expect(row).to_contain_text("patient unresponsive on call")
    expect(row).to_contain_text("active")
    admin.shot("review")


def test_idle_warning_offers_to_stay_and_then_signs_out(tabs: Any, demo_server: DemoServer) -> None:
    tab = tabs()
    page = tab.page
    page.clock.install()
    tab.sign_in("nurse.okafor")
    dialog = page.locator("#idle-warning")
    expect(dialog).to_be_hidden()
    page.clock.fast_forward("13:30")  # staff idle limit 15 min; warning 2 min before
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("signed out in")
    tab.shot("warning")
    page.get_by_role("button", name="Stay signed in").click()
    expect(dialog).to_be_hidden()
    page.clock.fast_forward("15:30")
    expect(page).to_have_url(re.compile(r"/login\?reason=idle$"))
    expect(page.get_by_role("status")).to_contain_text("inactivity")
    # The sign-out went through the server: the session is gone, not just the page.
    page.goto("/home")
    expect(page).to_have_url(re.compile(r"/login$"))
