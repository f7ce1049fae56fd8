"""pig serve: the HTTP answers equal pig rank's, bad requests get a 4xx JSON error, nothing but the indexed
videos' own files can be read, and the page renders results in a headless browser (where one is installed)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="pig serve needs the serve extra: pip install 'pigcli[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (the test extra)")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from conftest import find_chromium, live_server_of  # noqa: E402
from pigcli.cli import app as cli  # noqa: E402

QUERIES = ["a red square moves left", "blue and green", "something bright in the corner"]
SECRET = "top secret: not a video"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, tiny_extract):
    """A PIG index of the session's 6 videos (select -> generate -> fuse), a client of its server, a client
    of a server that reranks, and a secret file next to everything."""
    from pigcli.serve.app import create_app
    from pigcli.stages.fuse import fuse
    from pigcli.stages.generate import generate
    from pigcli.stages.select import select

    root = tmp_path_factory.mktemp("serve")
    sel, gen, index = root / "sel.h5", root / "gen.h5", root / "index.h5"
    select(tiny_extract, sel)
    generate(sel, gen, str(tiny_model_dir), device="cpu")
    fuse(gen, index, str(tiny_model_dir), device="cpu")
    secret = root / "secret.txt"
    secret.write_text(SECRET)
    return SimpleNamespace(root=root, index=index, sel=sel, feats=tiny_extract, secret=secret,
                           client=TestClient(create_app(index)),
                           reranking=TestClient(create_app(index, rerank=4)))


def pig_rank_jsonl(*args) -> list[dict]:
    result = CliRunner().invoke(cli, ["rank", *map(str, args), "--format", "jsonl", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def as_served(lines: list[dict], query_id: str) -> list[dict]:
    return [{key: line[key] for key in ("rank", "video", "score")} for line in lines if line["query_id"] == query_id]


# --- the same ranking as pig rank ------------------------------------------------------------------------

@pytest.mark.parametrize("query", QUERIES)
def test_get_search_equals_pig_rank(served, query) -> None:
    answer = served.client.get("/search", params={"q": query, "k": 4})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["query"] == query and body["truncated"] is False
    assert body["results"] == as_served(pig_rank_jsonl(served.index, "-q", query, "-n", 4), "q1")
    assert "scan;dur=" in answer.headers["server-timing"]


def test_post_batch_equals_pig_rank(served) -> None:
    answer = served.client.post("/search", params={"k": 6}, json=QUERIES)
    assert answer.status_code == 200, answer.text
    expected = pig_rank_jsonl(served.index, *[a for q in QUERIES for a in ("-q", q)], "-n", 6)
    assert [item["query"] for item in answer.json()] == QUERIES
    for i, item in enumerate(answer.json(), start=1):
        assert item["results"] == as_served(expected, f"q{i}")
        assert [r["rank"] for r in item["results"]] == list(range(1, 7))


def test_rerank_equals_pig_rank_rerank(served) -> None:
    expected = pig_rank_jsonl(served.index, "-q", QUERIES[0], "-n", 5, "--rerank", 4)
    plain = pig_rank_jsonl(served.index, "-q", QUERIES[0], "-n", 5)
    assert served.reranking.get("/health").json()["rerank"] == 4
    answer = served.reranking.get("/search", params={"q": QUERIES[0], "k": 5}).json()
    assert answer["results"] == as_served(expected, "q1")
    assert answer["results"] != as_served(plain, "q1")  # the rerank's combined scores differ from the index's
    # a request may turn it off, or ask for another K
    off = served.reranking.get("/search", params={"q": QUERIES[0], "k": 5, "rerank": 0}).json()
    assert off["results"] == as_served(plain, "q1")
    two = served.reranking.get("/search", params={"q": QUERIES[0], "k": 5, "rerank": 2}).json()
    assert two["results"] == as_served(pig_rank_jsonl(served.index, "-q", QUERIES[0], "-n", 5, "--rerank", 2), "q1")


def test_health(served) -> None:
    health = served.client.get("/health").json()
    assert health["status"] == "ok" and health["videos"] == 6 and health["rerank"] == 0
    assert health["pictures"] is True and health["model"]["name"] == "tiny"


# --- bad requests -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, fragment", [
    ("/search", "missing q"),
    ("/search?q=", "empty query"),
    ("/search?q=%20%20", "empty query"),
    ("/search?q=car&k=0", "k must be between 1 and 1000"),
    ("/search?q=car&k=1001", "k must be between 1 and 1000"),
    ("/search?q=car&k=-3", "k must be between"),
    ("/search?q=car&k=ten", "k: "),
    ("/search?q=car&rerank=-1", "rerank must be between"),
    ("/search?q=car&rerank=5", "start it with pig serve INDEX --rerank"),
    ("/search?q=" + "a" * 2001, "at most 2000"),
    ("/thumb?id=alpha&n=0", "n must be between"),
    ("/search?q=car&like=alpha", "not both"),
    ("/search?like=alpha&rerank=5", "never reranked"),
    ("/search?q=car&format=xml", "format must be one of json, csv"),
])
def test_bad_get_is_400_with_a_json_error(served, url, fragment) -> None:
    answer = served.client.get(url)
    assert answer.status_code == 400, answer.text
    assert fragment in answer.json()["error"]


@pytest.mark.parametrize("body, status, fragment", [
    (b"not json", 400, "JSON list of query texts"),
    (b'{"q": "car"}', 400, "JSON list"),
    (b"[]", 400, "non-empty"),
    (b'["car", 3]', 400, "JSON list"),
    (b'["car", "  "]', 400, "empty query"),
    (json.dumps(["car"] * 1025).encode(), 400, "at most 1024"),
    (b"[" + b'"car",' * 300_000 + b'"car"]', 413, "at most 1048576"),
])
def test_bad_post_is_4xx_with_a_json_error(served, body, status, fragment) -> None:
    answer = served.client.post("/search", content=body)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]


def test_huge_body_without_length_is_refused(served) -> None:
    def chunks():  # chunked transfer: no Content-Length to refuse it by
        for _ in range(40):
            yield b"x" * 65536

    answer = served.client.post("/search", content=chunks())
    assert answer.status_code == 413 and "over 1048576 bytes" in answer.json()["error"]


def test_like_an_unknown_video_is_404_json(served) -> None:
    answer = served.client.get("/search", params={"like": "no-such-video"})
    assert answer.status_code == 404 and "'no-such-video' is not in" in answer.json()["error"]


def test_unknown_route_and_video_are_404_json(served) -> None:
    assert served.client.get("/nowhere").json() == {"error": "Not Found"}
    answer = served.client.get("/video", params={"id": "zulu"})
    assert answer.status_code == 404 and "'zulu' is not in" in answer.json()["error"]


# --- files: only the indexed videos' own ----------------------------------------------------------------

def test_video_is_its_own_file_with_range_requests(served, video_folder) -> None:
    data = (video_folder / "alpha.mp4").read_bytes()
    whole = served.client.get("/video", params={"id": "alpha"})
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["accept-ranges"] == "bytes"
    part = served.client.get("/video", params={"id": "alpha"}, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"


def test_no_file_outside_the_indexed_videos_can_be_read(served, video_folder) -> None:
    secret = served.secret
    relative = Path("..") / secret.parent.name / secret.name
    attempts = [f"/video?id={i}" for i in (secret, secret.stem, relative, f"alpha/../../{secret.name}",
                                           "../../../../etc/passwd", "%2e%2e%2f" + secret.name, served.index)]
    attempts += [f"/{kind}?id={secret}" for kind in ("thumb", "patches")]
    attempts += ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/static/%2e%2e%2f%2e%2e/errors.py",
                 "/video/../secret.txt", f"/static/{secret}", "/static//etc/passwd"]
    for url in attempts:
        answer = served.client.get(url)
        assert answer.status_code == 404, (url, answer.status_code)
        assert SECRET not in answer.text and "def create_app" not in answer.text and "root:" not in answer.text
    # what the page needs is there
    assert "<title>pig search</title>" in served.client.get("/").text
    assert "/search?" in served.client.get("/static/app.js").text


# --- pictures -------------------------------------------------------------------------------------------

def test_thumb_is_a_jpeg_strip_of_the_model_frames(served) -> None:
    from io import BytesIO

    from PIL import Image

    from pigcli.media import SourceVideos

    answer = served.client.get("/thumb", params={"id": "bravo", "n": 4})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    strip = np.asarray(Image.open(BytesIO(answer.content)).convert("RGB"), np.float32)
    frames = SourceVideos(served.index).frames("bravo")  # [12, 32, 32, 3]
    assert strip.shape == (32, 4 * 32, 3)
    for position, frame in enumerate([0, 4, 7, 11]):  # evenly spaced over the 12 frames
        tile = strip[:, position * 32 : (position + 1) * 32]
        assert np.abs(tile - frames[frame]).mean() < 12  # JPEG: close, not exact


def test_patches_are_the_select_files_choice(served) -> None:
    import h5py

    answer = served.client.get("/patches", params={"id": "charlie"}).json()
    with h5py.File(served.sel, "r") as handle:
        row = [i.decode() if isinstance(i, bytes) else i for i in handle["ids"][:]].index("charlie")
        chosen = handle["selected_index"][row]
    assert answer["frames"] == 12 and answer["image_size"] == 32
    # tiny model: 16 patches per frame, a 4 x 4 grid of 8 px
    expected = [(p // 16, (p % 16 % 4) * 8, (p % 16 // 4) * 8) for p in chosen.tolist()]
    assert [(b["frame"], b["x0"], b["y0"]) for b in answer["boxes"]] == expected
    assert all(b["x1"] - b["x0"] == 8 and b["y1"] - b["y0"] == 8 for b in answer["boxes"])


# --- the command ------------------------------------------------------------------------------------------

def test_serve_without_the_extra_says_what_to_install(served, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    result = CliRunner().invoke(cli, ["serve", str(served.index)])
    assert result.exit_code == 1
    assert "pip install 'pigcli[serve]'" in result.output


def test_serve_missing_index_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "none.h5")])
    assert result.exit_code == 1 and "not found" in result.output


# --- a real server and a real browser ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def live_server(served):
    """The app on a free local port, run by uvicorn in a thread (as pig serve runs it)."""
    from pigcli.serve.app import create_app

    with live_server_of(create_app(served.index)) as url:
        yield url


@pytest.mark.slow
def test_live_server_answers_over_http(live_server, served) -> None:
    import httpx

    answer = httpx.get(f"{live_server}/search", params={"q": QUERIES[1], "k": 3}, timeout=30)
    assert answer.json() == served.client.get("/search", params={"q": QUERIES[1], "k": 3}).json()


@pytest.mark.slow
def test_page_renders_results_in_a_headless_browser(live_server, served, tmp_path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no headless browser: install Chromium (apt-get install chromium) to check the page")
    expected = served.client.get("/search", params={"q": QUERIES[0], "k": 6}).json()["results"]
    url = f"{live_server}/?q={QUERIES[0].replace(' ', '+')}&k=6&show=1"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=8000", "--window-size=1280,900"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    # one card per result, in rank order, with id and score, thumbnails from /thumb
    videos = [part.split("</span>")[0] for part in dom.split('<span class="video">')[1:]]
    assert videos == [r["video"] for r in expected], dom[-2000:]
    assert dom.count('class="card"') == 6 and dom.count("/thumb?id=") >= 6
    assert f'{expected[0]["score"]:.4f}' in dom
    # show=1 opened the first result: its player and its ITS patches drawn on the frames
    assert f'src="/video?id={expected[0]["video"]}"' in dom
    assert dom.count('class="box"') == 16  # the tiny model's 16 ITS patches
    shot = tmp_path / "page.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_concurrent_requests_share_one_scan_and_get_their_own_answers(served) -> None:
    searcher = served.client.app.state.searcher
    alone = {text: searcher.search([text], k=3) for text in QUERIES}
    answers = {}
    with searcher._lock:  # a scan is running: the requests below queue up behind it
        threads = [threading.Thread(target=lambda t=text, k=k: answers.__setitem__(t, searcher.search([t], k=k)))
                   for text, k in zip(QUERIES, (3, 2, 1))]
        for thread in threads:
            thread.start()
        while len(searcher._queue) < len(QUERIES):
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    for text, k in zip(QUERIES, (3, 2, 1)):
        assert answers[text].batch == len(QUERIES)  # one scan answered all three
        assert answers[text].hits == [alone[text].hits[0][:k]]
