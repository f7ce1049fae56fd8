"""pig serve: the HTTP answers equal pig rank's, bad requests get a 4xx JSON error, nothing but the indexed
videos' own files can be read, and the page renders results in a headless browser (where one is installed)."""

from __future__ import annotations

import json
import os
import shutil
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
                           client=local_client(create_app(index)),
                           reranking=local_client(create_app(index, rerank=4)))


def local_client(app) -> TestClient:
    """A client that sends Host: localhost, as a browser on the machine does (TestClient's own is 'testserver')."""
    return TestClient(app, base_url="http://localhost")


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
    assert answer.status_code == 404 and answer.json()["error"] == "no video with this id in the index"  # no id echoed


def test_unknown_route_and_video_are_404_json(served) -> None:
    assert served.client.get("/nowhere").json() == {"error": "Not Found"}
    for kind in ("video", "thumb", "patches"):
        answer = served.client.get(f"/{kind}", params={"id": "zulu-not-indexed"})
        assert answer.status_code == 404 and answer.json() == {"error": "no video with this id in the index"}


def test_long_ids_are_refused_and_never_echoed(served) -> None:
    long_id = "x" * 1000 + "<script>" + "y" * 100
    for kind in ("video", "thumb", "patches"):
        answer = served.client.get(f"/{kind}", params={"id": long_id})
        assert answer.status_code == 400, answer.text
        assert "at most 1024 characters" in answer.json()["error"] and "<script>" not in answer.text
    assert served.client.get("/video", params={"id": "x" * 1024}).status_code == 404  # at the cap: looked up


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


# --- a video file swapped after indexing ---------------------------------------------------------------

@pytest.fixture(scope="module")
def swappable(tmp_path_factory, tiny_model_dir, video_folder):
    """An extract file of 2 videos indexed through a symlinked folder (link -> real): alpha.mp4 and swap.mp4
    (a copy of foxtrot.mp4). The tests replace swap.mp4 after indexing, as a user sharing the folder could."""
    from pigcli.stages.extract import extract

    root = tmp_path_factory.mktemp("swappable")
    real = root / "real"
    real.mkdir()
    shutil.copy(video_folder / "alpha.mp4", real / "alpha.mp4")
    shutil.copy(video_folder / "foxtrot.mp4", real / "swap.mp4")
    (root / "link").symlink_to(real)
    feats = root / "feats.h5"
    extract([root / "link"], feats, str(tiny_model_dir), device="cpu", workers=0)
    return SimpleNamespace(root=root, swap=real / "swap.mp4", alpha=real / "alpha.mp4", feats=feats,
                           original=(real / "swap.mp4").read_bytes())


@pytest.fixture
def swap_client(swappable, served):
    """A client of a server whose videos are the swappable extract file's; swap.mp4 is restored afterwards."""
    from pigcli.serve.app import build_app
    from pigcli.serve.catalog import VideoCatalog

    yield local_client(build_app(served.client.app.state.searcher, VideoCatalog(swappable.feats)))
    swappable.swap.unlink(missing_ok=True)
    swappable.swap.write_bytes(swappable.original)


def replace(path: Path, link_to: Path | None = None) -> None:
    """path becomes a symlink to link_to, or (None) a named pipe."""
    path.unlink()
    if link_to is None:
        os.mkfifo(path)
    else:
        path.symlink_to(link_to)


def test_the_indexed_file_is_served_through_its_symlinked_folder(swappable, swap_client) -> None:
    answer = swap_client.get("/video", params={"id": "swap"})
    assert answer.status_code == 200 and answer.content == swappable.original
    assert swap_client.get("/thumb", params={"id": "swap", "n": 2}).status_code == 200


@pytest.mark.parametrize("target", ["/etc/passwd", "secret", "outside video", "pipe"])
def test_a_file_swapped_for_a_link_outside_the_indexed_folders_is_not_served(swappable, swap_client, served,
                                                                             video_folder, target, capsys) -> None:
    link_to = {"/etc/passwd": Path("/etc/passwd"), "secret": served.secret, "pipe": None,
               "outside video": video_folder / "foxtrot.mp4"}[target]  # the very bytes indexed, elsewhere
    replace(swappable.swap, link_to)
    for kind in ("video", "thumb"):
        answer = swap_client.get(f"/{kind}", params={"id": "swap"})
        assert answer.status_code == 404, (kind, answer.text[:200])
        assert answer.json() == {"error": "this video's file cannot be shown (the server's log says why)"}
    assert "swap.mp4" in capsys.readouterr().err  # the reason goes to the server's log, not to the client


def test_a_link_to_another_file_in_the_indexed_folders_is_served(swappable, swap_client) -> None:
    replace(swappable.swap, Path("alpha.mp4"))
    answer = swap_client.get("/video", params={"id": "swap"})
    assert answer.status_code == 200 and answer.content == swappable.alpha.read_bytes()


def test_404_bodies_name_no_server_path(swappable, swap_client, served, tmp_path) -> None:
    from pigcli.serve.app import build_app
    from pigcli.serve.catalog import VideoCatalog

    swappable.swap.unlink()  # deleted since indexing
    bodies = [swap_client.get(f"/{kind}", params={"id": "swap"}).text for kind in ("video", "thumb")]
    import h5py

    lonely = tmp_path / "index.h5"  # an index whose extract file is gone: search works, pictures do not
    shutil.copy(served.index, lonely)
    with h5py.File(lonely, "a") as handle:
        handle.attrs["inputs"] = json.dumps([{"path": str(tmp_path / "gone.h5"), "stage": "generate"}])
    no_pictures = local_client(build_app(served.client.app.state.searcher, VideoCatalog(lonely)))
    answers = [no_pictures.get(f"/{kind}", params={"id": "alpha"}) for kind in ("video", "thumb", "patches")]
    assert all(a.status_code == 404 and "extract file was not found" in a.json()["error"] for a in answers)
    bodies += [answer.text for answer in answers]
    for body in bodies:
        assert "error" in json.loads(body)
        assert str(tmp_path) not in body and str(swappable.root) not in body and "/tmp" not in body, body


# --- what a browser elsewhere may do: Host allow-list and headers --------------------------------------

SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                    "content-security-policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
                                               "frame-ancestors 'none'"}


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example",
                                  "localhost.attacker.example:80", "", "10.0.0.1:8000"])
def test_a_foreign_host_header_is_refused(served, host) -> None:  # DNS rebinding: a page elsewhere, our address
    answer = served.client.get("/search", params={"q": "car"}, headers={"Host": host})
    assert answer.status_code == 421, answer.text
    assert "--allow-host" in answer.json()["error"] and "results" not in answer.text
    assert {name: answer.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:9", "[::1]:8000", "[::1]", "LocalHost:1"])
def test_local_host_headers_are_answered(served, host) -> None:
    assert served.client.get("/health", headers={"Host": host}).status_code == 200


def test_the_host_given_and_allowed_names_are_answered(served) -> None:
    from pigcli.serve.app import build_app

    app = build_app(served.client.app.state.searcher, served.client.app.state.catalog,
                    hosts=("192.168.1.20", "pig.lan"))
    client = TestClient(app)
    for host, status in [("192.168.1.20:8000", 200), ("pig.lan", 200), ("localhost:8000", 200),
                         ("testserver", 421), ("192.168.1.21:8000", 421)]:
        assert client.get("/health", headers={"Host": host}).status_code == status, host


@pytest.mark.parametrize("method, url", [("GET", "/"), ("GET", "/static/app.js"), ("GET", "/static/style.css"),
                                         ("GET", "/health"), ("GET", "/search?q=car"), ("GET", "/video?id=alpha"),
                                         ("GET", "/thumb?id=alpha"), ("GET", "/patches?id=alpha"),
                                         ("GET", "/nowhere"), ("GET", "/search?k=0"), ("POST", "/search")])
def test_every_response_carries_the_security_headers(served, method, url) -> None:
    answer = served.client.request(method, url, content=b"[1]" if method == "POST" else None)
    assert {name: answer.headers.get(name) for name in SECURITY_HEADERS} == SECURITY_HEADERS, (url, answer.status_code)


def test_the_page_needs_nothing_inline(served) -> None:
    """The CSP allows only the server's own files: no inline script, style or handler may creep into the page."""
    import re

    page = served.client.get("/").text
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S | re.I)
    assert scripts and all(not body.strip() for body in scripts)
    assert all("src=\"/static/" in tag for tag in re.findall(r"<script\b[^>]*>", page, re.I))
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", page, re.I)


# --- pictures -------------------------------------------------------------------------------------------

def test_thumb_is_a_jpeg_strip_of_the_model_frames(served) -> None:
    from io import BytesIO

    from PIL import Image

    from pigcli.query.media import SourceVideos

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


@pytest.mark.parametrize("port", ["80000", "-1", "65536"])
def test_serve_port_out_of_range_is_one_usage_line(served, port) -> None:
    result = CliRunner().invoke(cli, ["serve", str(served.index), "--port", port])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: --port must be between 0 and 65535 (0: a free one), not {port}"]


@pytest.fixture
def busy_port():
    """A port another program listens on."""
    import socket

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_serve_on_a_busy_port_is_one_line_and_exit_1(served, busy_port) -> None:
    result = CliRunner().invoke(cli, ["serve", str(served.index), "--port", str(busy_port)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{busy_port}: address already in use (another server? pick another "
        "--port, or --port 0 for a free one)"]


@pytest.mark.parametrize("host, reason", [("192.0.2.1", "cannot assign requested address"),  # not this machine's
                                          ("no such host", "unknown host")])
def test_serve_on_a_bad_host_is_one_line_and_exit_1(served, host, reason) -> None:
    result = CliRunner().invoke(cli, ["serve", str(served.index), "--host", host, "--port", "0"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on {host}") and reason in lines[0], lines


@pytest.mark.slow
@pytest.mark.parametrize("stop, code", [("SIGINT", 0), ("SIGTERM", 0)])
def test_pig_serve_says_where_once_listening_and_a_stop_exits_0(served, pig_cache, stop, code) -> None:
    """The real command in its own process: --port 0 picks a free port, the "serving" line names it, the
    Host check holds over the wire (--allow-host adds a name), and Ctrl-C (SIGINT) or SIGTERM ends it cleanly."""
    import signal
    import sys

    import httpx

    from conftest import pig_env

    server = subprocess.Popen([sys.executable, "-m", "pigcli", "serve", str(served.index), "--port", "0",
                               "--device", "cpu", "--allow-host", "pig.lan"], stderr=subprocess.PIPE, text=True, env=pig_env(pig_cache))
    try:
        line = server.stderr.readline()
        assert line.startswith(f"serving {served.index} (6 videos) on http://127.0.0.1:"), line
        url = line.split(" on ")[1].strip()
        assert not url.endswith(":0/")
        assert httpx.get(f"{url}health", timeout=30).json()["videos"] == 6
        assert httpx.get(f"{url}health", headers={"Host": "attacker.example"}, timeout=30).status_code == 421
        assert httpx.get(f"{url}health", headers={"Host": "pig.lan:80"}, timeout=30).status_code == 200
        server.send_signal(getattr(signal, stop))
        assert server.wait(timeout=30) == code
        assert "Traceback" not in server.stderr.read()
    finally:
        server.kill()
        server.wait()


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
