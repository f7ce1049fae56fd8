"""The search page in a real browser: headless Chromium driven by Playwright against a live `pig serve` of a
small index whose one source video is gone. Browser tests skip (saying why) without Playwright or Chromium;
the API tests next to them run everywhere."""

from __future__ import annotations

import csv
import io
import shutil
import time
from types import SimpleNamespace

import pytest
from conftest import find_chromium, live_server_of

pytest.importorskip("fastapi", reason="pig serve needs the serve extra: pip install 'pigcli[serve]'")
pytest.importorskip("uvicorn", reason="pig serve needs the serve extra: pip install 'pigcli[serve]'")
httpx = pytest.importorskip("httpx", reason="the test extra: pip install 'pigcli[test]'")

pytestmark = pytest.mark.slow  # a live server, and a browser: end to end

QUERIES = ["a red square moves left", "blue and green", "something bright in the corner"]
GONE = "echo"  # its source file is deleted after indexing
CAPTIONS = {"alpha": "a red square slides over grey", "bravo": "green boxes on a tall frame",
            "charlie": "three small squares"}


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_model_dir, video_folder):
    """An index of a copy of the session's 6 videos, one of them (GONE) deleted afterwards, and a captions file."""
    from pigcli.stages.extract import extract
    from pigcli.stages.fuse import fuse
    from pigcli.stages.generate import generate
    from pigcli.stages.select import select

    root = tmp_path_factory.mktemp("page")
    videos = root / "videos"
    shutil.copytree(video_folder, videos)
    feats, sel, gen, index = (root / name for name in ("feats.h5", "sel.h5", "gen.h5", "index.h5"))
    extract([videos], feats, str(tiny_model_dir), device="cpu", workers=0)
    select(feats, sel)
    generate(sel, gen, str(tiny_model_dir), device="cpu")
    fuse(gen, index, str(tiny_model_dir), device="cpu")
    next(videos.glob(f"{GONE}.*")).unlink()
    captions = root / "captions.csv"
    captions.write_text("video_id,caption\n" + "".join(f"{v},{c}\n" for v, c in CAPTIONS.items()))
    return SimpleNamespace(index=index, captions=captions, model=tiny_model_dir)


@pytest.fixture(scope="module")
def app(collection):
    """The app with the captions file, answering with a Content-Security-Policy of its own files only."""
    from pigcli.serve.app import create_app

    app = create_app(collection.index, captions=collection.captions)

    @app.middleware("http")
    async def strict_policy(request, call_next):  # the page must work with its own files only
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = "default-src 'self'"
        return response

    return app


@pytest.fixture(scope="module")
def server(app):
    """The app on a free local port, run by uvicorn in a thread as pig serve runs it."""
    with live_server_of(app) as url:
        yield url


def api(server: str, path: str, **params):
    answer = httpx.get(f"{server}{path}", params=params, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def expected_videos(server: str, query: str, k: int) -> list[str]:
    return [hit["video"] for hit in api(server, "/search", q=query, k=k)["results"]]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright: pip install playwright "
                                   "(the test extra) to check the page in a browser")
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium: apt-get install chromium to check the page in a browser")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server)
    opened = context.new_page()
    errors = []
    opened.on("pageerror", lambda err: errors.append(str(err)))
    opened.on("console", lambda message: errors.append(message.text)
              if message.type == "error" and "Content Security Policy" in message.text else None)
    yield opened
    context.close()
    assert not errors, errors  # no uncaught script error in any test


def shown(page) -> list[str]:
    return page.locator("#results .card .video").all_inner_texts()


def search(page, query: str) -> None:
    page.fill("#q", query)
    page.press("#q", "Enter")


def wait_for_cards(page, videos: list[str]) -> None:
    page.wait_for_function("n => document.querySelectorAll('#results .card').length === n", arg=len(videos))
    assert shown(page) == videos


# --- bugs ------------------------------------------------------------------------------------------------

def test_an_older_answer_never_replaces_a_newer_one(page, server) -> None:
    held = []

    def hold_the_first_query(route):
        if "red+square" in route.request.url or "red%20square" in route.request.url:
            held.append(route)  # answered only after the second query's results are on the page
        else:
            route.continue_()

    page.route("**/search?*", hold_the_first_query)
    page.goto(f"/?q={QUERIES[2]}")
    wait_for_cards(page, expected_videos(server, QUERIES[2], 12))
    search(page, QUERIES[0])
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        page.wait_for_timeout(20)
    assert held, "the first search never started"
    # while it runs: no old results, and a loading indicator
    assert shown(page) == [] and "searching" in page.inner_text("#status")
    assert "busy" in page.get_attribute("#status", "class")
    second = expected_videos(server, QUERIES[1], 12)
    search(page, QUERIES[1])
    wait_for_cards(page, second)
    for route in held:  # the late, older answer arrives
        try:
            route.continue_()
        except Exception:  # the page cancelled it: nothing left to answer
            pass
    page.wait_for_timeout(800)
    assert shown(page) == second
    assert QUERIES[1] in page.inner_text("#status") and QUERIES[0] not in page.inner_text("#status")
    assert page.input_value("#q") == QUERIES[1]


def test_a_k_outside_the_dropdown_is_kept_for_the_next_search(page, server) -> None:
    page.goto(f"/?q={QUERIES[0]}&k=5")
    wait_for_cards(page, expected_videos(server, QUERIES[0], 5))
    assert page.input_value("#k") == "5"
    search(page, QUERIES[1])
    wait_for_cards(page, expected_videos(server, QUERIES[1], 5))
    assert "error" not in (page.get_attribute("#status", "class") or "")


def test_a_new_search_does_not_leave_the_old_detail_panel(page, server) -> None:
    first = expected_videos(server, QUERIES[0], 6)
    page.goto(f"/?q={QUERIES[0]}&k=6&show=1")
    page.wait_for_selector("#detail:not([hidden])")
    assert first[0] in page.inner_text("#detail-title")
    assert page.evaluate("document.getElementById('player').loop")  # clips loop
    search(page, QUERIES[2])
    wait_for_cards(page, expected_videos(server, QUERIES[2], 6))
    assert page.is_hidden("#detail")
    assert page.evaluate("document.getElementById('player').paused")


def test_a_missing_source_video_says_why_on_its_card_and_in_the_panel(page, server) -> None:
    page.goto(f"/?q={QUERIES[0]}&k=6")
    wait_for_cards(page, expected_videos(server, QUERIES[0], 6))
    card = page.locator(".card", has=page.locator(".video", has_text=GONE))
    card.locator(".reason").wait_for()
    assert "missing" in card.locator(".reason").inner_text()
    assert card.locator("img").count() == 0  # no broken image
    card.click()
    page.wait_for_selector("#detail .reason")
    assert "missing" in page.inner_text("#detail .reason")
    assert page.is_hidden("#player")
    assert page.locator("#frames .box").count() == 0  # no boxes floating on nothing


def test_health_does_not_claim_pictures_when_a_source_video_is_missing(server) -> None:
    health = api(server, "/health")
    assert health["pictures"] is False and health["missing_videos"] == 1


def test_back_and_forward_restore_each_search(page, server) -> None:
    page.goto("/")
    for query in QUERIES[:2]:
        search(page, query)
        wait_for_cards(page, expected_videos(server, query, 12))
    page.go_back()
    wait_for_cards(page, expected_videos(server, QUERIES[0], 12))
    assert page.input_value("#q") == QUERIES[0]
    page.go_forward()
    wait_for_cards(page, expected_videos(server, QUERIES[1], 12))
    assert page.input_value("#q") == QUERIES[1]


def test_cards_open_with_the_keyboard_and_escape_closes_the_panel(page, server) -> None:
    videos = expected_videos(server, QUERIES[0], 12)
    page.goto(f"/?q={QUERIES[0]}")
    wait_for_cards(page, videos)
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('card')"):
            break
    focused = page.evaluate("document.activeElement.querySelector('.video').textContent")
    assert focused == videos[0]
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail:not([hidden])")
    assert videos[0] in page.inner_text("#detail-title")
    page.keyboard.press("Escape")
    page.wait_for_selector("#detail", state="hidden")
    assert page.evaluate("document.activeElement.querySelector('.video').textContent") == videos[0]  # back where it was


@pytest.mark.parametrize("width", [400, 1280])
def test_narrow_windows_and_long_queries_fit(browser, server, width) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800}, base_url=server)
    page = context.new_page()
    long_query = " ".join(["a red square moves left over a grey background"] * 15)[:700]
    page.goto(f"/?q={long_query}")
    page.wait_for_selector("#results .card")
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scroll
    button = page.locator("button[type=submit]").bounding_box()
    assert button["x"] >= 0 and button["x"] + button["width"] <= width
    assert page.locator("header").bounding_box()["height"] < 140  # the query does not fill the header
    context.close()


def test_favicon_is_a_small_icon(server) -> None:
    answer = httpx.get(f"{server}/favicon.ico", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/")
    assert 0 < len(answer.content) < 10_000


# --- features ---------------------------------------------------------------------------------------------

def pig_rank_jsonl(*args) -> list[dict]:
    import json

    from typer.testing import CliRunner

    from pigcli.cli import app as cli

    result = CliRunner().invoke(cli, ["rank", *map(str, args), "--format", "jsonl", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_more_like_this_equals_pig_rank_with_the_videos_vector_as_the_query(collection, server, tmp_path) -> None:
    import h5py
    from typer.testing import CliRunner

    from pigcli.cli import app as cli

    (tmp_path / "q.txt").write_text("a placeholder, replaced by the video's vector\n")
    queries = tmp_path / "q.h5"
    made = CliRunner().invoke(cli, ["embed-text", str(tmp_path / "q.txt"), "-m", str(collection.model),
                                    "-o", str(queries), "--device", "cpu"])
    assert made.exit_code == 0, made.output
    with h5py.File(collection.index) as index:
        ids = [i.decode() if isinstance(i, bytes) else i for i in index["ids"][:]]
        vector = index["embedding"][ids.index("bravo")]
    with h5py.File(queries, "r+") as handle:
        handle["embedding"][0] = vector
    ranked = pig_rank_jsonl(collection.index, queries, "-n", 6)
    served = api(server, "/search", like="bravo", k=6)
    assert served["like"] == "bravo"
    assert [(r["rank"], r["video"], r["score"]) for r in served["results"]] == \
        [(r["rank"], r["video"], r["score"]) for r in ranked]
    assert served["results"][0]["video"] == "bravo"  # the video itself first


def test_more_like_this_on_a_card(page, server) -> None:
    page.goto(f"/?q={QUERIES[0]}&k=6")
    wait_for_cards(page, expected_videos(server, QUERIES[0], 6))
    card = page.locator(".card", has=page.locator(".video", has_text="charlie"))
    card.get_by_role("button", name="more like this").click()
    wait_for_cards(page, [hit["video"] for hit in api(server, "/search", like="charlie", k=6)["results"]])
    assert "like=charlie" in page.url and "like charlie" in page.inner_text("#status")
    page.go_back()
    wait_for_cards(page, expected_videos(server, QUERIES[0], 6))


def test_more_results_and_the_collection_size(page, server) -> None:
    page.goto(f"/?q={QUERIES[1]}&k=2")
    wait_for_cards(page, expected_videos(server, QUERIES[1], 2))
    assert page.inner_text("#status").startswith("2 of 6 videos")
    page.click("#more")
    wait_for_cards(page, expected_videos(server, QUERIES[1], 4))
    assert page.inner_text("#status").startswith("4 of 6 videos")
    page.click("#more")
    wait_for_cards(page, expected_videos(server, QUERIES[1], 6))
    assert page.is_hidden("#more")  # nothing more to show


def test_score_bars_are_relative_to_the_best(page, server) -> None:
    results = api(server, "/search", q=QUERIES[0], k=6)["results"]
    page.goto(f"/?q={QUERIES[0]}&k=6")
    wait_for_cards(page, [r["video"] for r in results])
    bars = page.eval_on_selector_all(".card .bar", "bars => bars.map(b => [b.value, b.max])")
    assert [value for value, _ in bars] == pytest.approx([r["score"] for r in results], abs=1e-4)
    assert bars[0][0] == bars[0][1]  # the best fills its bar


def test_captions_on_cards_and_as_example_queries(page, server) -> None:
    page.goto("/")
    page.wait_for_selector("#examples li")
    assert "6 videos indexed" in page.inner_text("#collection")
    examples = page.locator("#examples a").all_inner_texts()
    assert examples == api(server, "/health")["examples"] and set(examples) <= set(CAPTIONS.values())
    page.click(f"#examples a >> text={CAPTIONS['alpha']}")
    results = api(server, "/search", q=CAPTIONS["alpha"], k=12)["results"]
    wait_for_cards(page, [r["video"] for r in results])
    captions = page.locator(".card").evaluate_all(
        "cards => cards.map(c => (c.querySelector('.caption') || {}).textContent || null)")
    assert captions == [CAPTIONS.get(r["video"]) for r in results] == [r["caption"] for r in results]


def test_results_download_as_csv(server) -> None:
    answer = httpx.get(f"{server}/search", params={"q": QUERIES[0], "k": 3, "format": "csv"}, timeout=60)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    expected = api(server, "/search", q=QUERIES[0], k=3)["results"]
    assert [(r["query"], int(r["rank"]), r["video"], float(r["score"]), r["caption"] or None) for r in rows] == \
        [(QUERIES[0], e["rank"], e["video"], e["score"], e["caption"]) for e in expected]


def test_download_links_and_a_copied_link_to_a_result(browser, server) -> None:
    context = browser.new_context(base_url=server)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server)
    page = context.new_page()
    page.goto(f"/?q={QUERIES[0]}&k=3")
    videos = expected_videos(server, QUERIES[0], 3)
    wait_for_cards(page, videos)
    assert httpx.get(server + page.get_attribute("#download-csv", "href"), timeout=60).text.count("\n") == 4
    assert httpx.get(server + page.get_attribute("#download-json", "href"), timeout=60).json() == \
        api(server, "/search", q=QUERIES[0], k=3)
    page.locator(".card").nth(2).get_by_role("button", name="copy link").click()
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('link copied')")
    link = page.evaluate("navigator.clipboard.readText()")
    assert link.startswith(server) and f"show={videos[2]}" in link
    opened = context.new_page()
    opened.goto(link)  # the link opens that result
    opened.wait_for_selector("#detail:not([hidden])")
    assert videos[2] in opened.inner_text("#detail-title")
    context.close()


def test_the_weak_match_threshold_is_what_the_captions_best_matches_score(server) -> None:
    best = [api(server, "/search", q=caption, k=1)["results"][0]["score"] for caption in CAPTIONS.values()]
    assert api(server, "/health")["weak_below"] == pytest.approx(min(best), abs=1e-4)


def test_a_weak_best_match_gets_a_hint(page, server, app, monkeypatch) -> None:
    tops = {query: api(server, "/search", q=query, k=1)["results"][0]["score"] for query in QUERIES[:2]}
    weak, strong = sorted(tops, key=tops.get)
    assert tops[weak] < tops[strong]
    monkeypatch.setattr(app.state, "weak_below", (tops[weak] + tops[strong]) / 2)
    page.goto(f"/?q={strong}")
    page.wait_for_selector("#results .card")
    assert page.is_hidden("#hint")
    search(page, weak)
    page.wait_for_selector("#hint:not([hidden])")
    assert "weak" in page.inner_text("#hint")
