"""The dashboard in a real headless Chromium: the list, a compensated saga's timeline, and
the retry button on a failed saga."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.orders import DECLINED_CARD, new_sku, order, wait_shipping_caught_up
from tests.e2e.system import OPERATOR_TOKEN, System

pytestmark = pytest.mark.e2e

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    if CHROMIUM is None:
        reason = "Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def sign_in(page: Any, system: System) -> None:
    page.goto(f"{system.url}/ui")
    assert page.url.endswith("/ui/login")
    page.fill("input[name=token]", OPERATOR_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{system.url}/ui")


def test_an_operator_finds_a_compensated_saga_and_retries_a_failed_one(
    system: System, page: Any
) -> None:
    OUTPUT.mkdir(exist_ok=True)
    sku = new_sku(system, 10)
    compensated = system.wait_final(system.start_saga(order(sku, card=DECLINED_CARD), version=1))
    system.stop("shipping")
    try:
        failed = system.wait_final(system.start_saga(order(sku), saga_type="order_pivot"))
    finally:
        system.start("shipping")
    assert failed["status"] == "failed"

    sign_in(page, system)
    page.click("a:text-is('compensated')")
    page.click(f"a:text-is('{compensated['id']}')")
    assert page.inner_text("#saga-status") == "compensated"
    timeline = page.inner_text("#timeline")
    assert "step_failed" in timeline
    assert "compensation_sent" in timeline
    assert page.locator("#diagram svg g.step[data-status=compensated]").count() == 1
    page.screenshot(path=str(OUTPUT / "dashboard-compensated.png"), full_page=True)

    wait_shipping_caught_up(system, failed)
    page.goto(f"{system.url}/ui/sagas/{failed['id']}")
    assert page.inner_text("#saga-status") == "failed"
    page.fill("form[action$='/retry'] input[name=reason]", "shipping is back")
    page.click("form[action$='/retry'] button")
    page.wait_for_url("**done=retry*")
    assert "retry accepted" in page.inner_text(".flash")

    assert system.wait_final(failed["id"])["status"] == "completed"
    page.reload()
    assert page.inner_text("#saga-status") == "completed"
    assert "operator_retry" in page.inner_text("#timeline")
    page.screenshot(path=str(OUTPUT / "dashboard-retried.png"), full_page=True)


def test_a_running_sagas_page_shows_it_finish_without_a_reload(system: System, page: Any) -> None:
    OUTPUT.mkdir(exist_ok=True)
    sku = new_sku(system, 10)
    system.stop("payment")  # the saga waits on its charge until payment is back
    try:
        saga_id = system.start_saga(order(sku), version=1)
        system.wait_timeline(saga_id, "command_sent", "charge_payment")
        opened = page.goto(f"{system.url}/ui/sagas/{saga_id}")
        if page.url.endswith("/ui/login"):
            sign_in(page, system)
            opened = page.goto(f"{system.url}/ui/sagas/{saga_id}")
        assert page.inner_text("#saga-status") == "running"
        policy = opened.headers["content-security-policy"]
        assert "script-src 'self'; connect-src 'self'" in policy  # a file; nothing inline
        rows = page.locator("#timeline tbody tr").count()
        page.evaluate("window.sameDocument = true")  # a reload would lose it
    finally:
        system.start("payment")

    # a locator, not a JavaScript predicate: the page's CSP forbids evaluating strings
    page.locator("#saga-status.completed").wait_for(timeout=60_000)
    page.wait_for_selector("#saga-live[data-ended=true]", state="attached", timeout=10_000)
    assert page.evaluate("window.sameDocument") is True
    assert page.locator("#timeline tbody tr").count() > rows
    timeline = page.inner_text("#timeline")
    assert "step_succeeded" in timeline
    assert "saga_completed" in timeline
    assert page.inner_text("#steps").count("succeeded") == 3
    assert page.locator("#diagram svg g.step[data-status=succeeded]").count() == 3
    ids = [
        int(i)
        for i in page.locator("#timeline tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)"
        )
    ]
    assert ids == sorted(set(ids)), "each entry once, in order"
    assert ids == [e["id"] for e in system.saga(saga_id)["timeline"]]
    page.screenshot(path=str(OUTPUT / "dashboard-live.png"), full_page=True)
