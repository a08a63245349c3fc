"""The gogs run form in a real browser: Debian's chromium (headless, through chromedriver and Selenium) on a
real `prefect server start` with its UI, the form made by `vicflow deploy`, and the run it starts executed
by `vicflow worker` on the test Docker engine.

Screenshots of each page are saved in the test's output directory (and copied to .vicflow/screenshots/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.testbed import REPO, prefect_stack
from tests.testbed.prefect_stack import APP_HOST, ENGINE, free_port

pytestmark = [pytest.mark.prefect, pytest.mark.docker]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = REPO / ".vicflow" / "screenshots"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_engine, docker_images):
    client = docker_engine.client()
    try:
        with prefect_stack.running(tmp_path_factory.mktemp("form-stack"), client, PREFECT_UI_ENABLED="true") as stack:
            stack.client = client
            yield stack
    finally:
        client.close()


@pytest.fixture
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing: apt-get install chromium chromium-driver (make apt does)"
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,2400",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def field(driver, name: str, timeout: float = 30):
    """The form control of input ``name``, found through its label (as a person finds it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    xpath = f"//label[normalize-space()='{name}' or normalize-space()='{name} (Optional)']"
    label = WebDriverWait(driver, timeout).until(EC.presence_of_element_located((By.XPATH, xpath)))
    return driver.find_element(By.ID, label.get_attribute("for"))


def type_into(control, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    control.send_keys(Keys.CONTROL, "a")
    control.send_keys(Keys.DELETE)
    control.send_keys(value)


def shot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS / name)
    return path


def test_the_gogs_run_form_has_a_typed_field_per_input_and_starts_a_run(stack, browser, tmp_path):
    from vicflow.flows.language import blueprint as bp

    deployed = subprocess.run(
        [sys.executable, "-m", "vicflow.flows.cli.main", "deploy", "gogs", "--pool", "vicflow"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    line = next(row for row in deployed.stdout.splitlines() if row.startswith("run-blueprint/form-gogs: "))
    deployment_id = line.split(": ")[1]
    ui = stack.api.removesuffix("/api")
    browser.get(f"{ui}/v2/deployments/deployment/{deployment_id}/run")

    gogs = bp.load(REPO / "blueprints" / "gogs.yaml")
    expected = {"string": ("textarea", None), "integer": ("input", "number"), "secret": ("input", "password")}
    for name, spec in gogs.inputs.items():
        control = field(browser, name)
        if spec.type == "boolean":
            assert control.get_attribute("role") == "switch", name
            continue
        tag, kind = expected[spec.type]
        assert control.tag_name == tag and (kind is None or control.get_attribute("type") == kind), (name, spec.type)
    http_port, ssh_port = free_port(), free_port()
    values = {
        "docker_host": ENGINE,
        "app_host": APP_HOST,
        "publish_ip": APP_HOST,
        "http_port": str(http_port),
        "ssh_port": str(ssh_port),
        "gogs_image": stack.site["gogs_image"],
        "postgres_image": stack.site["postgres_image"],
        "volume_driver": "local",
        "db_password": "${{ secrets.gogs_db_password }}",  # typed into a masked field; resolved by the run
        "admin_password": "${{ secrets.gogs_admin_password }}",
    }
    for name, value in values.items():
        type_into(field(browser, name), value)
    shot(browser, tmp_path, "1-gogs-run-form.png")

    from selenium.webdriver.common.by import By

    submit = "//button[@type='submit' and normalize-space()='Submit']"
    refused = "//*[contains(normalize-space(), 'error while creating flow run')]"
    browser.find_element(By.XPATH, submit).click()
    # the UI validates the form against the deployment's schema in the browser, then creates the run: on a busy
    # machine (a loaded `make test`) that took more than a minute once. Once, the server's SQLite was locked and
    # the UI said "Unknown error while creating flow run", the form still filled in: Submit again, as its user would
    deadline, runs, submits, quiet_until = time.monotonic() + 180, [], 1, time.monotonic()
    while not runs and time.monotonic() < deadline:  # the UI goes to the deployment's runs once it made one
        runs = stack.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
        refused_now = browser.find_elements(By.XPATH, refused)
        if not runs and refused_now and submits < 3 and time.monotonic() >= quiet_until:
            shot(browser, tmp_path, f"1-gogs-run-form-refused-{submits}.png")
            time.sleep(5)  # the server gets over its lock
            browser.find_element(By.XPATH, submit).click()
            submits, quiet_until = submits + 1, time.monotonic() + 30  # not the same toast twice
        time.sleep(0.5)
    if not runs:
        shot(browser, tmp_path, "1-gogs-run-form-no-run.png")
    assert len(runs) == 1, f"{submits} submit(s) of the form made {len(runs)} flow runs ({browser.current_url})"
    run_id = runs[0]["id"]

    deadline, state = time.monotonic() + 420, None
    while time.monotonic() < deadline:
        state = requests.get(f"{stack.api}/flow_runs/{run_id}", timeout=10).json()["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(2)
    assert state == "COMPLETED", (state, stack.logs("worker")[-3000:] if hasattr(stack, "logs") else "")
    run = requests.get(f"{stack.api}/flow_runs/{run_id}", timeout=10).json()
    assert run["parameters"]["inputs"]["http_port"] == http_port, "the number field sent an integer"
    assert "secrets.gogs_db_password" in run["parameters"]["inputs"]["db_password"], "no password stored in clear"
    tasks = stack.post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}})
    assert {t["name"] for t in tasks} >= {s.id for s in gogs.steps}, "one task run per step"
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
    assert "vicflow-gogs-summary" in {a["key"] for a in artifacts}
    browser.get(f"{ui}/v2/runs/flow-run/{run_id}")
    time.sleep(5)
    assert "gogs" in browser.page_source
    shot(browser, tmp_path, "2-gogs-flow-run.png")
    browser.get(f"{ui}/v2/runs/flow-run/{run_id}?tab=Artifacts")
    time.sleep(4)
    shot(browser, tmp_path, "3-gogs-run-artifacts.png")
    assert requests.get(f"http://{APP_HOST}:{http_port}/", timeout=10, allow_redirects=False).status_code in (200, 302)
