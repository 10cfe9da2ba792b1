"""The operator page in a real headless browser (Debian's chromium driven by Playwright): an
admin types a prompt, waits for the image, sees the job, the keys and the usage chart."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shared.accounts import store, usage
from tests.http_helpers import wait_healthy

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(models_dir, tmp_path):
    """`sdgate serve` on the tiny model with a key database and a bootstrap admin key."""
    port = free_port()
    db = f"sqlite:///{tmp_path}/sdgate.db"
    env = {**os.environ, "SDGATE_DATABASE_URL": db, "SDGATE_ADMIN_KEYS": "admin-secret",
           "SDGATE_JOBS_DB": str(tmp_path / "jobs.sqlite3"),
           "SDGATE_STATE_DB": str(tmp_path / "state.sqlite3"), "SDGATE_LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "--port", str(port),
                             "--models-dir", str(models_dir), "--output-dir",
                             str(tmp_path / "out")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        yield base, db
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium missing: apt-get install -y chromium "
                    "(.ci/run installs it, so the test runs in CI)")
def test_admin_generates_and_sees_jobs_keys_and_usage(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, db = server
    store.create(db, "acme", ["openai"])
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900})
        page = browser.new_page()
        page.goto(base + "/")
        expect(page.locator("#version")).to_contain_text("v")
        page.fill("#key", "admin-secret")
        page.click("#save-key")
        expect(page.locator("#model")).to_contain_text("tiny-sd")
        page.fill("#prompt", "a lighthouse at dusk")
        page.select_option("#size", "64x64")
        page.fill("#steps", "12")
        expect(page.locator("#curl")).to_contain_text("a lighthouse at dusk")
        page.click("#generate")
        img = page.locator("#result")
        expect(img).to_be_visible(timeout=120_000)
        page.wait_for_function("document.getElementById('result').naturalWidth > 0")
        assert page.evaluate("[document.getElementById('result').naturalWidth,"
                             " document.getElementById('result').naturalHeight]") == [64, 64]
        expect(page.locator("#progress")).to_contain_text("done in")
        # the pixels shown are an image, not a blank: they vary across the picture
        spread = page.evaluate("""() => {
            const i = document.getElementById('result'), c = document.createElement('canvas');
            c.width = i.naturalWidth; c.height = i.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(i, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            let lo = 255, hi = 0;
            for (let k = 0; k < d.length; k += 4) {
                lo = Math.min(lo, d[k]); hi = Math.max(hi, d[k]); }
            return hi - lo; }""")
        assert spread > 10
        # the job in the recent list, the admin's key table and chart
        expect(page.locator("#jobs tr").first).to_contain_text("/sdapi/v1/txt2img")
        expect(page.locator("#jobs tr").first).to_contain_text("ok")
        expect(page.locator("#admin")).to_be_visible()
        expect(page.locator("#keys")).to_contain_text("acme")
        expect(page.locator("#chart-note")).to_contain_text("images per UTC day")
        curls = {}
        for name in ("OpenAI", "ModelsLab", "APIGPT draw", "Form"):
            page.click(f"#shape-tabs >> text={name}")
            expect(page.locator("#curl")).to_contain_text("a lighthouse at dusk")
            curls[name] = page.locator("#curl").inner_text()
        page.click("#shape-tabs >> text=A1111")
        shot = os.environ.get("SDGATE_SCREENSHOT") or str(tmp_path / "operator-page.png")
        page.screenshot(path=shot, full_page=True)
        browser.close()
    assert Path(shot).stat().st_size > 10_000
    # the page's curl lines run as they are: the OpenAI one generates with the shell's key
    for name in ("OpenAI", "ModelsLab"):
        out = subprocess.run(["bash", "-c", curls[name]], capture_output=True, text=True,
                             env={**os.environ, "SDGATE_KEY": "admin-secret"}, timeout=300)
        assert '"status":"error"' not in out.stdout and ("url" in out.stdout or
                                                          "output" in out.stdout), out.stdout
    rows = usage.query(db)
    assert [(r.shape, r.status, r.width) for r in reversed(rows)] == [
        ("a1111", "ok", 64), ("openai", "ok", 64), ("modelslab", "ok", 64)]
    assert rows[-1].steps == 12
