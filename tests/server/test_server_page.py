"""The page at ``GET /``, end to end: headless Chromium against a live server.

Drives Debian's chromium through Playwright (never a downloaded browser): choose a
recording, give terms and slide text, transcribe, and check what a person sees and
downloads.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"the page's tests drive Debian's chromium, and {CHROMIUM} is missing",
                allow_module_level=True)  # fmt: skip
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

pytestmark = pytest.mark.model

RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "audio" / "1272-128104-0000.wav"
# This closed network has nothing to reach; these flags stop Chromium trying.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
RESULT_TIMEOUT_MS = 60_000
# Notes whether the Transcribe button was ever disabled: a check after the click could
# miss a busy state that a fast server ends within milliseconds.
_WATCH_BUSY = """() => {
  const go = document.getElementById("go");
  window.sawBusy = false;
  new MutationObserver(() => { window.sawBusy ||= go.disabled; })
    .observe(go, {attributes: true, attributeFilter: ["disabled"]});
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()


def _download(page, button: str) -> tuple[str, str]:
    """Click a download button; the file's suggested name and its text."""
    with page.expect_download() as info:
        page.click(button)
    download = info.value
    return download.suggested_filename, Path(download.path()).read_text("utf-8")


def test_transcribes_with_terms_and_downloads(page, live_server):
    page.goto(live_server.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('tiny')")
    page.set_input_files("#file", str(RECORDING))
    assert "1272-128104-0000.wav" in page.text_content("#chosen")
    page.fill("#terms", "Quilter\napostle")
    page.fill("#slides", "The Middle Classes and their Gospel\nA talk by Mr. Quilter, 1890")
    page.evaluate(_WATCH_BUSY)
    page.click("#go")
    page.wait_for_selector("#result:not([hidden])", timeout=RESULT_TIMEOUT_MS)
    assert page.evaluate("window.sawBusy")  # the button was disabled while the server worked

    transcript = page.text_content("#transcript")
    assert "apostle of the" in transcript.lower()
    assert "Quilter" in page.locator("#transcript mark").all_text_contents()
    assert "Quilter" in page.text_content("#used")
    assert page.is_hidden("#error")
    assert page.is_enabled("#go")

    name, text = _download(page, "#dl-txt")
    assert name == "1272-128104-0000.txt"
    assert "Quilter is the apostle" in text and text.endswith("\n")
    name, srt = _download(page, "#dl-srt")
    assert name == "1272-128104-0000.srt"
    assert srt.startswith("1\n00:00:0") and " --> " in srt.splitlines()[1]
    name, body = _download(page, "#dl-json")
    assert name == "1272-128104-0000.json"
    response = json.loads(body)
    assert "Quilter" in response["text"] and response["segments"]


def test_shows_the_servers_error_and_no_result(page, live_server, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a recording\n")
    page.goto(live_server.url + "/")
    page.set_input_files("#file", str(notes))
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])", timeout=RESULT_TIMEOUT_MS)
    error = page.text_content("#error")
    assert "415" in error and "not audio or video" in error  # the server's error.message
    assert page.is_hidden("#result")
    assert page.is_enabled("#go")


# Counts the transcript's lines that appeared while the Transcribe button was disabled,
# that is before the server's stream ended.
_WATCH_LIVE = """() => {
  const go = document.getElementById("go");
  window.liveLines = 0;
  new MutationObserver(() => {
    if (go.disabled) window.liveLines = Math.max(window.liveLines,
      document.querySelectorAll("#transcript li.live").length);
  }).observe(document.getElementById("transcript"), {childList: true});
}"""


def test_segments_show_as_they_are_decoded(page, live_server, long_recording):
    page.goto(live_server.url + "/")
    page.set_input_files("#file", str(long_recording))
    page.evaluate(_WATCH_LIVE)
    page.click("#go")
    page.wait_for_selector("#downloads:not([hidden])", timeout=RESULT_TIMEOUT_MS)
    assert page.evaluate("window.liveLines") >= 1  # shown while the server still worked
    assert page.locator("#transcript li.live").count() == 0  # the done event redrew them
    assert "John Collier" in page.text_content("#transcript")  # the last window's words
    assert "1:58 of audio" in page.text_content("#meta")  # 4 x 29.6 s
    assert page.is_hidden("#error")


def test_warns_of_a_recording_over_the_upload_limit(page, start_server):
    small = start_server(max_upload_bytes=50_000)
    posts: list[str] = []
    page.on("request", lambda r: r.method == "POST" and posts.append(r.url))
    page.goto(small.url + "/")
    page.wait_for_function("document.getElementById('model').textContent.includes('tiny')")
    page.set_input_files("#file", str(RECORDING))  # 190 kB
    warning = page.text_content("#too-big")
    assert page.is_visible("#too-big") and "upload limit of 50 KB" in warning
    page.click("#go")
    assert "upload limit" in page.text_content("#error")
    assert posts == []  # refused here, not uploaded to be refused


def test_loads_nothing_from_other_hosts(page, live_server):
    hosts: list[str] = []
    page.on("request", lambda request: hosts.append(urllib.parse.urlsplit(request.url).hostname))
    page.goto(live_server.url + "/", wait_until="networkidle")
    assert "127.0.0.1" in hosts  # the page and /health
    assert set(hosts) <= {"127.0.0.1"}, hosts
