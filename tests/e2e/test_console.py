"""The console in headless Debian Chromium (Playwright): log in, assign a profile to a cluster and
see a VM inherit it, see an event from an enrolled SVM arrive."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vmshield.center import auth
from vmshield.center.testing import running_center
from vmshield.events import SEVERITY_HIGH, Event
from vmshield.integration.inventory import InventoryNode, diff
from vmshield.svm.center_client import CenterClient, enroll
from vmshield.svm.spool import Spool

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]


def test_console_login_assign_inherit_and_event(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with running_center(tmp_path / "center") as rc:
        st = rc.ctx.store
        with st.sessions.begin() as s:
            auth.add_user(s, "admin", "correct-horse-battery", "administrator", "test")
            conn = st.add_connection(s, "test", "vcenter-lab", "vsphere").id
            st.save_profile(s, "test", "file", "Standard", {"level": "recommended"})
            st.save_profile(s, "test", "file", "Strict", {"level": "high"})
        st.apply_changes(
            conn,
            diff(
                [],
                [
                    InventoryNode("datacenter", "dc", "DC0", None),
                    InventoryNode("cluster", "c0", "DC0_C0", "dc"),
                    InventoryNode("host", "h0", "DC0_C0_H0", "c0"),
                    InventoryNode("host", "h1", "DC0_C0_H1", "c0"),
                    InventoryNode(
                        "vm",
                        "vm-1",
                        "web-1",
                        "h0",
                        {
                            "uuid": "42a1-01",
                            "host": "h0",
                            "power_state": "on",
                            "ip_addresses": ["10.10.0.11"],
                        },
                    ),
                    InventoryNode(
                        "vm",
                        "vm-2",
                        "db-1",
                        "h1",
                        {"uuid": "42a1-02", "host": "h1", "power_state": "off"},
                    ),
                ],
            ),
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                ctx = browser.new_context(
                    ignore_https_errors=True, viewport={"width": 1280, "height": 900}
                )
                page = ctx.new_page()
                page.set_default_timeout(20000)
                page.goto(rc.url + "/inventory")
                expect(page).to_have_url(rc.url + "/login")
                page.fill("input[name=name]", "admin")
                page.fill("input[name=password]", "wrong-password")
                page.click("button[type=submit]")
                expect(page.locator(".error")).to_contain_text("Wrong name or password")
                page.fill("input[name=name]", "admin")
                page.fill("input[name=password]", "correct-horse-battery")
                page.click("button[type=submit]")
                expect(page).to_have_url(rc.url + "/inventory")
                vm = page.locator("li[data-kind=vm]", has_text="web-1")
                expect(vm.locator(".vm-status")).to_contain_text("file unprotected")
                expect(page.locator(".error")).to_contain_text("Hosts with no healthy SVM")

                # Assign a profile to the cluster.
                page.click("li[data-kind=cluster] > a")
                expect(page.locator("h1")).to_contain_text("DC0_C0")
                page.select_option("#choice-file", label="Strict")
                page.click("#assign-file")
                expect(page.locator(".msg")).to_contain_text("file assignment saved")
                expect(page.locator("#status-file")).to_contain_text("protected: Strict")

                # The VM inherits it, and says from where.
                page.goto(rc.url + "/inventory")
                expect(vm.locator(".vm-status")).to_contain_text("file protected: Strict")
                vm.locator("a").first.click()
                expect(page.locator("#status-file")).to_contain_text("protected: Strict")
                expect(page.locator("#eff-file")).to_contain_text("from cluster DC0_C0")
                page.screenshot(path=str(tmp_path / "console-vm.png"), full_page=True)

                # A real SVM enrols and ships an event; it shows up in the event list.
                page.goto(rc.url + "/services")
                page.locator("tr", has_text="DC0_C0_H0").locator(
                    "button", has_text="Deploy SVM"
                ).click()
                token_text = page.locator("#enrol-token").inner_text()
                token = token_text.split()[-1]
                enroll(rc.url, token, tmp_path / "svm")
                svm = CenterClient(tmp_path / "svm")
                svm.heartbeat(db_versions={"main": "27400"})
                spool = Spool(tmp_path / "svm" / "spool.db")
                spool.put(
                    Event(
                        event_type="file",
                        vm="42a1-01",
                        severity=SEVERITY_HIGH,
                        # The shape docs/events.md gives for file events.
                        data={
                            "action": "quarantine",
                            "backup_id": "3b5e01",
                            "file": {
                                "path": "/home/u/eicar.com",
                                "status": "infected",
                                "detections": [{"name": "Eicar-Test-Signature", "inner_path": ""}],
                            },
                        },
                    )
                )
                assert svm.ship_once(spool) == 1
                page.goto(rc.url + "/events")
                row = page.locator("#events tr", has_text="Eicar-Test-Signature")
                expect(row).to_contain_text("DC0_C0_H0")
                expect(row).to_contain_text("web-1")  # the VM's inventory name, not only its UUID
                page.screenshot(path=str(tmp_path / "console-events.png"), full_page=True)
                row.locator("a").click()
                expect(page.locator("pre")).to_contain_text("/home/u/eicar.com")
                page.goto(rc.url + "/quarantine")
                expect(page.locator("table")).to_contain_text("/home/u/eicar.com")
                expect(page.locator("table")).to_contain_text("3b5e01")
                page.goto(rc.url + "/services")
                expect(page.locator("tr", has_text="DC0_C0_H0").first).to_contain_text("healthy")
                page.screenshot(path=str(tmp_path / "console-services.png"), full_page=True)
                svm.close()
                spool.close()
            finally:
                browser.close()
        out = os.environ.get("VMSHIELD_SCREENSHOTS")
        if out:
            for p in tmp_path.glob("console-*.png"):
                shutil.copy(p, Path(out) / p.name)
