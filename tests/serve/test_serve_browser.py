"""The browser page in a real headless Chromium (Debian's), driven by Playwright.

Leaves a screenshot of the page answering in tests/artifacts/serve_page.png.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from dnallm.data.chat import parse_answer
from dnallm.serve.session import Conversation, Sampling
from serve_helpers import health, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
MAX_TOKENS = 40

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (apt-get install chromium)"
)

COUNT_UPDATES = """() => {
  window.answerUpdates = 0;
  new MutationObserver(() => { window.answerUpdates++; })
    .observe(document.getElementById("log"), {subtree: true, childList: true, characterData: true});
}"""


def reply(session, rec, turns):
    dna = session.prepare_dna(rec["reference_sequence"], rec["variant_sequence"], 10_000)
    return session.reply(Conversation(turns, dna), Sampling(max_new_tokens=MAX_TOKENS))


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        # The server wants its key: the browser answers the page's login prompt with it.
        context = browser.new_context(
            http_credentials={"username": "biologist", "password": server.api_key},
            viewport={"width": 1280, "height": 860},
        )
        page = context.new_page()
        yield page
        browser.close()


def test_page_streams_the_answer_and_shows_the_disease(page, server, session, test_records, tmp_path):
    from playwright.sync_api import expect

    rec = test_records[0]
    page.goto(server.url + "/")
    expect(page.locator("#model")).to_have_text(f"model: {session.name}")
    page.fill("#reference", rec["reference_sequence"])
    page.fill("#variant", rec["variant_sequence"])
    expect(page.locator("#dna-info")).to_have_text("reference 4001 bp, variant 4001 bp")
    page.fill("#max-tokens", str(MAX_TOKENS))
    page.click("#ask")

    want = reply(session, rec, [{"role": "user", "content": rec["question"]}])
    answer = page.locator(".turn.assistant").first
    expect(answer).to_have_text(want, timeout=60_000)
    expect(page.locator("#prediction-box")).to_be_visible()
    expect(page.locator("#prediction")).to_have_text(parse_answer(want) or "no 'Answer:' line in the reply")
    expect(page.locator("#ask")).to_be_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve_page.png"), full_page=True)

    # a follow-up question continues the same conversation
    page.fill("#question", "Why that disease?")
    page.click("#ask")
    first = {"role": "assistant", "content": want}
    follow_up = reply(
        session,
        rec,
        [{"role": "user", "content": rec["question"]}, first, {"role": "user", "content": "Why that disease?"}],
    )
    expect(page.locator(".turn.assistant").nth(1)).to_have_text(follow_up, timeout=60_000)


def test_page_fasta_upload_and_errors(page, server, session, test_records, tmp_path):
    from playwright.sync_api import expect

    rec = test_records[1]
    fasta = tmp_path / "pair.fa"
    fasta.write_text(f">ref\n{rec['reference_sequence']}\n>alt\n{rec['variant_sequence']}\n")
    page.goto(server.url + "/")
    page.set_input_files("#fasta", str(fasta))
    expect(page.locator("#reference")).to_have_value(rec["reference_sequence"])
    expect(page.locator("#variant")).to_have_value(rec["variant_sequence"])

    bad = rec["variant_sequence"][:7] + "Q" + rec["variant_sequence"][8:]
    page.fill("#variant", bad)
    page.click("#ask")
    expect(page.locator("#error")).to_contain_text("variant: invalid character 'Q' at position 7")
    expect(page.locator(".turn")).to_have_count(0)

    three = tmp_path / "three.fa"
    three.write_text(">a\nACGT\n>b\nACGT\n>c\nACGT\n")
    page.set_input_files("#fasta", str(three))
    expect(page.locator("#error")).to_contain_text(
        "three.fa: expected 2 FASTA records (reference, then variant), found 3"
    )


def test_page_streams_a_long_reply_and_stop_frees_the_slot(page, server, session, test_records):
    from playwright.sync_api import expect

    # The page has no logit_bias control; adding one here makes a reply that only Stop ends. Banning
    # the end of turn alone is not enough: the tiny model then emits byte pieces that are no whole
    # character, which the page cannot show until the end. One printable word, pushed up, streams.
    word = session.tokenizer.encode(" variant", add_special_tokens=False)[0]

    def ban_end_of_turn(route):
        body = json.loads(route.request.post_data)
        body["logit_bias"] = {str(session.eos_id): -100, str(word): 100}
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/chat/completions", ban_end_of_turn)
    rec = test_records[2]
    before = health(server)
    page.goto(server.url + "/")
    page.fill("#reference", rec["reference_sequence"])
    page.fill("#variant", rec["variant_sequence"])
    page.fill("#max-tokens", "3000")
    page.evaluate(COUNT_UPDATES)
    page.click("#ask")
    answer = page.locator(".turn.assistant").first
    expect(answer).to_have_text(re.compile(r"[\s\S]{80,}"), timeout=60_000)
    expect(page.locator("#stop")).to_be_enabled()
    page.click("#stop")
    expect(page.locator("#ask")).to_be_enabled()
    # the reply grew in several steps: two turns added, then its text replaced as pieces arrived
    assert page.evaluate("window.answerUpdates") >= 4
    state = wait_for(server, lambda s: s["active"] == 0 and s["cancelled"] == before["cancelled"] + 1, seconds=120)
    assert 0 < state["generated_tokens"] - before["generated_tokens"] < 3000
