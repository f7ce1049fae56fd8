"""The HTTP layer of `pig serve` (FastAPI): the JSON API, the indexed videos' files and the search page.

    GET  /search?q=TEXT&k=10&rerank=K   {"query": TEXT, "truncated": bool, "results": [{"rank", "video", "score"}]}
                                        (each result also has "caption" where the server has a captions file)
    GET  /search?like=ID&k=10           "more like this": the video's stored vector as the query, {"like": ID, ...}
    GET  /search?...&format=csv         the same results as a CSV file: query, rank, video, score[, caption]
    POST /search?k=10&rerank=K          body: a JSON list of query texts; answers: a list of the above, one batch
    GET  /health                        {"status": "ok", "videos", "model", "rerank", "pictures", "missing_videos",
                                         "captions", "examples", "weak_below"}; pictures: every indexed video
                                         can be shown; weak_below: a best match under it is weak
    GET  /video?id=ID                   the video's own file (HTTP range requests: the page's player seeks)
    GET  /thumb?id=ID&n=4               n of the frames the model saw, side by side (JPEG)
    GET  /patches?id=ID                 the patches the ITS selector chose: {"frames", "image_size", "boxes"}
    GET  /                              the search page (static/): /?q=TEXT&k=12, /?like=ID; &show opens the
                                        first result, &show=ID that video (static/app.js)
    GET  /favicon.ico                   the page's icon

Every error is a JSON {"error": MESSAGE} with a 4xx status: 400 bad parameters or body (an id over
MAX_ID_CHARS), 404 unknown video (a missing source file says so, without its path) or route, 413 a body over MAX_BODY_BYTES, 421 a Host header the server
does not answer to (guard.py; every response carries its security headers). Error bodies name no server
path and echo no video id: the reason a video cannot be shown goes to the server's log (catalog.py). Scores are rounded to 6 decimals, as `pig rank
--format jsonl` writes them. Each search answer carries a Server-Timing header: the encode, scan and
rerank times of the batch its queries were scanned with (searcher.py), and that batch's size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ..choices import SEARCH_FORMATS, check_choice
from ..console import warn
from ..errors import PigError, UsageError
from .catalog import NotAvailable, VideoCatalog
from .guard import HostAndHeaders
from .searcher import Answer, Searcher, UnknownVideo

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 1 << 20     # a POST body: about 1 MiB of query texts
MAX_QUERY_CHARS = 2000       # one query (the text encoder keeps its first max_text_tokens tokens anyway)
MAX_BATCH = 1024             # queries in one POST
MAX_ID_CHARS = 1024          # a video id (/video, /thumb, /patches); longer ones are refused, never looked up

VideoId = Annotated[str, Query(max_length=MAX_ID_CHARS)]
CALIBRATION_CAPTIONS = 256   # captions searched at startup to find what a weak best match scores


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class PigApp(FastAPI):
    """FastAPI with guard.HostAndHeaders outside everything, FastAPI's own error middleware included, so
    that every response, a crash's 500 too, carries the security headers."""

    def __init__(self, hosts=(), **kwargs):
        super().__init__(**kwargs)
        self.allowed_hosts = tuple(hosts)

    def build_middleware_stack(self):
        return HostAndHeaders(super().build_middleware_stack(), self.allowed_hosts)


def create_app(index: str | Path, *, model: str | None = None, device: str = "auto", rerank: int | str = 0,
               rerank_weights=None, features: str | Path | None = None, fp16_copy: bool = True,
               hosts=(), captions: str | Path | None = None, weak_below: float | None = None) -> FastAPI:
    """Load the index (into RAM, with an fp16 copy for the scan unless fp16_copy is False), the query
    encoder and, with rerank, the EERCF head once; return the app. hosts: names it answers to besides
    127.0.0.1, localhost and ::1 (the Host header, any port). captions: a captions file whose first
    caption of each video is shown on its card, and a few of them as example queries. weak_below: the
    page says a query's best match is weak below this score (None: calibrated on the captions,
    weak_threshold; no captions: never)."""
    searcher = Searcher(index, model=model, device=device, rerank=rerank, rerank_weights=rerank_weights,
                        features=features, fp16_copy=fp16_copy)
    catalog = VideoCatalog(index, captions)
    if weak_below is None and catalog.captions:
        weak_below = weak_threshold(searcher, catalog.examples(CALIBRATION_CAPTIONS))
    return build_app(searcher, catalog, hosts, weak_below)


def weak_threshold(searcher: Searcher, captions: list[str]) -> float:
    """The lowest best-match score of the collection's own captions: a query whose best match scores
    less than every real description of its videos probably has no match here: about 1 real caption in
    len(captions) + 1 is flagged. (Their 5th percentile flagged 1 in 20, the demo's own example among
    them; their lowest of 256 on the demo's 600 test videos, 0.8176, flags 6 of its 1,800 captions and
    lies well above what unrelated queries reach there, 0.71 to 0.74.)"""
    best = [hits[0].score for hits in searcher.search(captions, k=1).hits]
    return round(float(min(best)), 6)  # as answers round scores: that caption's own match is not below it


def build_app(searcher: Searcher, catalog: VideoCatalog, hosts=(), weak_below: float | None = None) -> FastAPI:
    app = PigApp(hosts, title="pig serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.searcher, app.state.catalog, app.state.weak_below = searcher, catalog, weak_below
    _add_error_handlers(app)

    @app.get("/health")
    def health():
        missing = catalog.missing_videos()
        return {"status": "ok", "videos": searcher.size, "model": searcher.index_model,
                "rerank": searcher.rerank_k, "pictures": missing == 0, "missing_videos": missing,
                "captions": len(catalog.captions), "examples": catalog.examples(),
                "weak_below": app.state.weak_below}

    @app.get("/search")
    def search_one(q: str | None = None, like: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
                   k: int = 10, rerank: int | None = None,
                   format: str = "json"):
        check_choice("format", format, SEARCH_FORMATS)  # a UsageError: 400
        if q is None and like is None:
            raise RequestError(400, "missing q: GET /search?q=a+red+car&k=10 (or like=VIDEO_ID: videos like that one)")
        if q is not None and like is not None:
            raise RequestError(400, "give q (a text) or like (a video id), not both")
        if like is not None:
            if rerank:
                raise RequestError(400, "like= is never reranked: EERCF scores a text against a video")
            answer = searcher.search_like(like, k)
            content = {"like": like, **_results(answer, [None], catalog)[0]}
        else:
            answer = searcher.search([_check_query(q)], k, rerank)
            content = _results(answer, [q], catalog)[0]
        return _csv(content) if format == "csv" else _json(content, answer)

    @app.post("/search")
    async def search_batch(request: Request, k: int = 10, rerank: int | None = None):
        texts = _query_list(await _read_body(request))
        answer = await run_in_threadpool(searcher.search, texts, k, rerank)
        return _json(_results(answer, texts, catalog), answer)

    @app.get("/video")
    def video(id: VideoId):
        return FileResponse(catalog.video_file(id))

    @app.get("/thumb")
    def thumb(id: VideoId, n: int = 4):
        from .thumbs import strip_jpeg

        if not 1 <= n <= 64:
            raise RequestError(400, f"n must be between 1 and 64 frames, not {n}")
        return Response(strip_jpeg(catalog.frames(id), n), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/patches")
    def patches(id: VideoId):
        return catalog.patches(id)

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico")
    def favicon():
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _check_query(text: str) -> str:
    if len(text) > MAX_QUERY_CHARS:
        raise RequestError(400, f"query of {len(text)} characters: at most {MAX_QUERY_CHARS}")
    return text


def _query_list(body: bytes) -> list[str]:
    try:
        texts = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, 'the body must be a JSON list of query texts, e.g. ["a red car", "a dog"]') from None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise RequestError(400, 'the body must be a non-empty JSON list of query texts, e.g. ["a red car"]')
    if len(texts) > MAX_BATCH:
        raise RequestError(400, f"{len(texts)} queries in one request: at most {MAX_BATCH}")
    return [_check_query(t) for t in texts]


async def _read_body(request: Request) -> bytes:
    """The body, refused (413) as soon as it passes MAX_BODY_BYTES, declared or not."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(413, f"body of {declared} bytes: at most {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(413, f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _results(answer: Answer, texts: list[str | None], catalog: VideoCatalog) -> list[dict]:
    """One answer per query (a text; None: a like= query, which has no text)."""
    return [{**({"query": text} if text is not None else {}), "truncated": truncated,
             "results": [_hit(h, catalog) for h in hits]}
            for text, hits, truncated in zip(texts, answer.hits, answer.truncated)]


def _hit(hit, catalog: VideoCatalog) -> dict:
    found = {"rank": hit.rank, "video": hit.video, "score": round(hit.score, 6)}
    if catalog.captions:
        found["caption"] = catalog.caption(hit.video)
    return found


def _csv(content: dict) -> Response:
    """One answer as a CSV file: the query (its text, or like:ID), rank, video, score[, caption]."""
    import csv
    import io

    columns = ["rank", "video", "score"] + (["caption"] if any("caption" in r for r in content["results"]) else [])
    query = content.get("query", f"like:{content.get('like')}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["query", *columns])
    writer.writerows([query, *(hit.get(c) for c in columns)] for hit in content["results"])
    return PlainTextResponse(out.getvalue(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="pig-results.csv"'})


def _json(content, answer: Answer) -> JSONResponse:
    timing = ", ".join([f"{name};dur={seconds * 1e3:.2f}" for name, seconds in answer.timings.items()]
                       + [f'batch;desc="{answer.batch} queries"'])
    return JSONResponse(content, headers={"Server-Timing": timing})


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestError)
    async def request_error(_, err: RequestError):
        return error(err.status, str(err))

    @app.exception_handler(NotAvailable)
    async def not_available(_, err: NotAvailable):
        return error(404, str(err))

    @app.exception_handler(UnknownVideo)
    async def unknown_video(_, err: UnknownVideo):
        return error(404, str(err))

    @app.exception_handler(UsageError)
    async def usage_error(_, err: UsageError):
        return error(400, str(err))

    @app.exception_handler(PigError)
    async def pig_error(_, err: PigError):  # the index's files changed under the server, say
        warn(f"serve: {err}")
        return error(500, "the server could not read its index files (its log says why)")

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_, err: RequestValidationError):
        first = err.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        return error(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(_, err: HTTPException):
        return error(err.status_code, str(err.detail))
