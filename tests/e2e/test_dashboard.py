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
