"""`make screenshots`: run the demo in a throwaway folder and photograph three admin pages.

Starts `manage.py demo` (emulated org, a fresh SQLite database, no worker) on free ports, signs
in with Playwright in Debian's Chromium (/usr/bin/chromium, or CHROMIUM), and writes
docs/screenshots/mapping.png (the value table), funnel.png (the connection page) and health.png
at 1,280 × 800 pixels. The README shows these files.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
START_TIMEOUT = 240
VIEWPORT = {"width": 1280, "height": 800}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, log: Path) -> None:
    started = time.time()
    while time.time() - started < START_TIMEOUT:
        if process.poll() is not None:
            sys.exit(f"The demo stopped early; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    sys.exit(f"The demo did not serve {url} within {START_TIMEOUT} s; see {log}")


def _shoot(base: str, password: str) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{base}/admin/login/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", password)
        page.click("input[type=submit]")
        page.wait_for_url(f"{base}/admin/")

        page.goto(f"{base}/admin/mappings/fieldmapping/?q=Status")
        page.get_by_role("link", name="Lead.Status").first.click()
        page.locator("#values").scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "mapping.png"))

        page.goto(f"{base}/admin/connections/connection/")
        page.get_by_role("link", name="Demo org (emulated)").first.click()
        funnel = page.locator("svg[role=img]").first
        funnel.scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "funnel.png"))

        page.goto(f"{base}/admin/connections/connection/health/")
        for summary in page.locator("details > summary").all():
            summary.click()
        page.screenshot(path=str(OUT / "health.png"))
        browser.close()


def main() -> None:
    password = secrets.token_urlsafe(12)
    port, emulator_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="stagemap-screenshots-") as folder:
        log = Path(folder) / "demo.log"
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{folder}/demo.sqlite3",
            "STAGEMAP_DEMO_PASSWORD": password,
            "LOG_LEVEL": "WARNING",
        }
        with open(log, "wb") as output:
            demo = subprocess.Popen(
                [sys.executable, "manage.py", "demo", "--addrport", f"127.0.0.1:{port}",
                 "--emulator-port", str(emulator_port), "--data-dir", f"{folder}/emulator",
                 "--no-worker"],
                cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_for(f"{base}/admin/login/", demo, log)
                _shoot(base, password)
            finally:
                demo.terminate()
                try:
                    demo.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    demo.kill()
    for name in ("mapping", "funnel", "health"):
        print(f"wrote {OUT / name}.png")


if __name__ == "__main__":
    main()
