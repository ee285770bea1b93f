"""The rules studio driven in a real headless Chromium (Debian's `chromium`, through Playwright): load a copy of
rules/demo.csv with a small synthetic sample, make a cell bad, see `rules check`'s message at that cell, fix it,
see the preview change, save, and compare the file on disk.

The browser is the system's (`STUDIO_CHROMIUM`, else /usr/lib/chromium/chromium, else `chromium` on PATH;
`.ci/run` installs Debian's package); Playwright's own browser download is never used. Without a Chromium the
test is skipped locally and fails on CI (`CI=true`), so a broken install cannot pass.

With `STUDIO_SCREENSHOT=docs/images/studio.png` it also writes the README's screenshot (1280×900).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "rules" / "demo.csv"
TARGET_COLUMN = "Target-C"


def chromium_path() -> str | None:
    configured = os.environ.get("STUDIO_CHROMIUM")
    if configured:
        return configured
    if Path("/usr/lib/chromium/chromium").exists():
        return "/usr/lib/chromium/chromium"
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        message = "no Chromium (install Debian's chromium package or set STUDIO_CHROMIUM)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture()
def studio(tmp_path):
    """A studio on a copy of rules/demo.csv and 40 users' synthetic events, served by uvicorn on a free port."""
    import uvicorn

    from cli.studio.app import StudioSettings, create_app
    from cli.studio.preview import sample_from_lines
    from cli.synthetic import StreamSpec, generate

    sheet = tmp_path / "demo.csv"
    shutil.copyfile(DEMO, sheet)
    sample = sample_from_lines(generate(StreamSpec(users=40, days=10)).lines, source="synthetic, 40 users")
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(StudioSettings(sheet, port, sample=sample)),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the studio did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/", sheet, sample
    server.should_exit = True
    thread.join(timeout=10)


def expected_users(sample, text: str, rule_id: str) -> int:
    """The rule's audience computed by the core directly, for the page to show."""
    from cli.studio.preview import AudiencePreview
    from cli.studio.sheet_model import SheetModel

    return AudiencePreview(sample).preview(SheetModel.from_csv(text).check().rules.rules)[rule_id].users


def test_edit_check_preview_save_in_chromium(browser, studio):
    from playwright.sync_api import expect

    url, sheet, sample = studio
    original = DEMO.read_text(encoding="utf-8")
    fixed = original.replace("daily_deal,at_least,3,", "daily_deal,at_least,5,", 1)
    assert fixed != original
    before, after = expected_users(sample, original, "push-regular"), expected_users(sample, fixed, "push-regular")
    assert after < before  # the sample must show the change

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(url)

    target = page.locator(f'input[data-row="0"][data-column="{TARGET_COLUMN}"]')
    users = page.locator("#preview-r0 .numbers")
    expect(target).to_have_value("3")
    expect(users).to_have_attribute("data-users", str(before))
    expect(page.locator("#sheet-body tr[data-row]")).to_have_count(4)
    # The dropdowns hold the parser's choices.
    operator = page.locator('select[data-row="0"][data-column="Operator-C"]')
    expect(operator).to_have_value("at_least")

    # A bad value: the message of `rules check`, at the cell; the other rows keep their preview.
    target.fill("abc")
    message = page.locator(f'[id^="msg-r0-c"][data-column="{TARGET_COLUMN}"]')
    expect(message).to_have_text("row 2, column Target-C: 'abc' is not a whole number (write a count, e.g. 3)")
    expect(target).to_have_attribute("aria-invalid", "true")
    assert target.get_attribute("aria-describedby") == message.get_attribute("id")
    expect(page.locator("#preview-r0 .numbers")).to_have_count(0)
    expect(page.locator("#preview-r1 .numbers")).to_have_count(1)
    expect(page.locator("#sheet-problems")).to_contain_text("demo.csv: row 2, column Target-C")

    # Fixed, with a higher target: the message goes and fewer users qualify.
    target.fill("5")
    expect(message).to_have_count(0)
    expect(users).to_have_attribute("data-users", str(after))
    expect(page.locator("#diff-disk")).to_contain_text("changed push-regular")

    if os.environ.get("STUDIO_SCREENSHOT"):
        page.screenshot(path=os.environ["STUDIO_SCREENSHOT"], full_page=False)

    page.locator("#save").click()
    expect(page.locator("#status")).to_have_text(f"saved {sheet.resolve()}")
    assert sheet.read_text(encoding="utf-8") == fixed
    expect(page.locator("#diff-disk")).to_have_text("no change")
    assert not errors, errors
    page.close()
