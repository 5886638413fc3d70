"""An analyst's journey through the Airflow 3 UI in a real browser (Debian's Chromium, driven by
Playwright), against the nightly run of the `nightly` fixture: sign in on the simple auth
manager's login page, find the nightly in the DAG list, open its last run, read the counts in
the run's note, open the report task and its XCom, then the quality gate's task, whose Details
tab lists its "Extra Links": "Quality report" opens the mailsync plugin's page of that run
(served only to a logged-in user), and the contacts source's report from there.

Each step leaves a screenshot in tests/artifacts/ui_journey/ (kept by CI as an artefact).
What the pages look like in 3.3.2, learnt by browsing them: the login form's fields are labelled
"Username" / "Password" (inputs `name="username"` / `name="password"`), its button "Sign in"
stays disabled until both are filled; the DAG search box filters as you type
(`?name_pattern=`); the run page shows only the note's first line ("✅ Succeeded …") and its
button "Edit note" opens a "Dag Run Note" dialog with the Markdown rendered (the table as a
real table); a task's XCom sits under its "Storage" tab, sub-tab "XCom", collapsed until
"Expand all extra JSON".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.services import launch_chromium, require_chromium

DAG = "crm_to_esp_contacts"
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "ui_journey"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, checked before the nightly starts: a missing browser costs no minute."""
    return require_chromium()


@pytest.fixture
def page(chromium):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)  # a React page fetches its data after it has loaded
        expect.set_options(timeout=20_000)
        try:
            yield page
        finally:
            browser.close()


def test_an_analyst_reads_the_nightly_run_in_the_ui(chromium, nightly, page):
    from playwright.sync_api import expect

    airflow, run_id = nightly["airflow"], nightly["run_id"]
    report = airflow.xcom(DAG, run_id, "report")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    shots: list[Path] = []

    def shot(name: str) -> None:
        shots.append(SHOTS / f"{len(shots) + 1:02d}-{name}.png")
        page.screenshot(path=str(shots[-1]), animations="disabled")  # not a dialog caught fading in

    # 1. Sign in through the login page the UI redirects to
    page.goto(f"{airflow.url}/")
    expect(page).to_have_url(re.compile(r"/auth/login"))
    expect(page.get_by_role("heading", name="Sign into Airflow")).to_be_visible()
    page.get_by_label("Username").fill(airflow.user)
    page.get_by_label("Password").fill(airflow.password)
    shot("login")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{airflow.url}/")

    # 2. Find the nightly in the DAG list by searching for it
    page.get_by_role("link", name="Dags", exact=True).click()
    expect(page).to_have_url(f"{airflow.url}/dags")
    page.get_by_placeholder("Search Dags").fill("crm_to_esp")
    expect(page).to_have_url(re.compile(r"name_pattern=crm_to_esp"))
    expect(page.get_by_role("link", name="shop_conversions_to_esp")).to_have_count(0)
    dag_link = page.get_by_role("link", name=DAG, exact=True)
    expect(dag_link).to_be_visible()
    shot("dag-list")

    # 3. The DAG's page, then its runs
    dag_link.click()
    expect(page).to_have_url(f"{airflow.url}/dags/{DAG}")
    runs_tab = page.get_by_role("link", name="Runs", exact=True)
    expect(runs_tab).to_be_visible()
    # the tabs come first, skeletons stand in for the data until it is fetched
    expect(page.locator(f'a[href="/dags/{DAG}/runs/{run_id}"]').first).to_be_visible()  # Latest Run
    expect(page.get_by_role("link", name=re.compile(r"Failed Runs"))).to_be_visible()
    expect(page.get_by_text("Last Dag Run", exact=True)).to_be_visible()
    shot("dag")
    runs_tab.click()
    expect(page).to_have_url(f"{airflow.url}/dags/{DAG}/runs")
    # the run's row in the runs table (the Overview's deadline list links the run too)
    expect(page.get_by_role("heading", name=re.compile(r"^\d+ Dag Runs?$"))).to_be_visible()  # "1 Dag Run"
    run_row = page.get_by_role("row").filter(has_text=run_id)
    expect(run_row).to_have_count(1)
    run_link = run_row.get_by_role("link", name=run_id, exact=True)
    expect(run_link).to_be_visible()
    shot("dag-runs")

    # 4. The last run's page: state, the note's headline, then the whole note
    run_link.click()
    run_page = f"{airflow.url}/dags/{DAG}/runs/{run_id}"
    expect(page).to_have_url(run_page)
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile(r"Succeeded"))).to_be_visible()
    shot("run")
    page.get_by_role("button", name="Edit note").click()
    note = page.get_by_role("dialog")
    expect(note.get_by_role("heading", name="Dag Run Note")).to_be_visible()
    expect(note.get_by_role("cell", name="extracted", exact=True)).to_be_visible()
    shot("run-note")
    shown = {}
    for row in note.get_by_role("row").all()[1:]:  # the first row is the header: stage | count
        stage, count = (cell.inner_text().strip() for cell in row.get_by_role("cell").all())
        shown[stage] = count
    expected = {stage: _as_shown(report[stage.replace(" ", "_")]) for stage in shown}
    assert shown == expected
    assert {"extracted", "created", "updated", "quarantined", "rejected"} <= set(shown), shown
    headline = "⚠️ Succeeded with warnings" if report["warnings"] else "✅ Succeeded"
    expect(note.get_by_role("heading", name=headline, exact=True)).to_be_visible()
    page.keyboard.press("Escape")
    expect(note).to_have_count(0)

    # 5. The report task of that run, and its XCom: the summary as one value
    report_link = page.locator(f'a[href="/dags/{DAG}/runs/{run_id}/tasks/report"]', has_text="report")
    report_link.click()
    expect(page).to_have_url(f"{run_page}/tasks/report")
    expect(page.get_by_role("link", name="Storage", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="report", exact=True)).to_be_visible()
    shot("report-task")
    page.get_by_role("link", name="Storage", exact=True).click()
    page.get_by_role("link", name="XCom", exact=True).click()
    expect(page).to_have_url(f"{run_page}/tasks/report/xcom")
    rows = page.get_by_role("row").filter(has_text="return_value")
    expect(rows).to_have_count(1)
    page.get_by_role("button", name="Expand all extra JSON").click()
    # the value sits in a code editor that renders only the lines in view: the summary's first keys
    expect(rows).to_contain_text(f'"run_id": "{run_id}"')
    expect(rows).to_contain_text(re.compile(rf'"extracted":\s*{report["extracted"]}\b'))
    shot("report-xcom")

    # 6. The quality gate's task page, its Details tab: the "Quality report" link opens the report
    page.goto(f"{run_page}/tasks/validate")
    page.get_by_role("link", name="Details", exact=True).click()
    link = page.get_by_role("link", name="Quality report")
    expect(link).to_be_visible()
    expect(page.get_by_role("link", name="Revenue report")).to_have_count(0)  # not the gate's
    shot("validate-task")
    if link.get_attribute("target") == "_blank":
        with page.context.expect_page() as opened:
            link.click()
        files = opened.value
    else:
        link.click()
        files = page
    expect(files).to_have_url(re.compile(rf"/mailsync/runs/{DAG}/.+/quality-report$"))
    files.get_by_role("link", name="quality/contacts/report.html").click()  # one report per source
    expect(files).to_have_url(re.compile(r"/file/quality/contacts/report\.html$"))
    expect(files.get_by_text(re.compile("quarantine", re.IGNORECASE)).first).to_be_visible()
    files.screenshot(path=str(SHOTS / f"{len(shots) + 1:02d}-quality-report.png"), full_page=True)
    shots.append(SHOTS / f"{len(shots) + 1:02d}-quality-report.png")

    names = [p.name for p in shots]
    assert names == [
        "01-login.png",
        "02-dag-list.png",
        "03-dag.png",
        "04-dag-runs.png",
        "05-run.png",
        "06-run-note.png",
        "07-report-task.png",
        "08-report-xcom.png",
        "09-validate-task.png",
        "10-quality-report.png",
    ]
    for path in shots:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, (path, len(data))


def _as_shown(value) -> str:
    """How the note writes a count: thousands separated by commas; words as they are."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
