"""The HTTP layer of `pig serve` (FastAPI): the JSON API, the indexed videos' files and the search page.

    GET  /search?q=TEXT&k=10&rerank=K   {"query": TEXT, "truncated": bool, "results": [{"rank", "video", "score"}]}
    POST /search?k=10&rerank=K          body: a JSON list of query texts; answers: a list of the above, one batch
    GET  /health                        {"status": "ok", "videos", "model", "rerank", "pictures"}
    GET  /video?id=ID                   the video's own file (HTTP range requests: the page's player seeks)
    GET  /thumb?id=ID&n=4               n of the frames the model saw, side by side (JPEG)
    GET  /patches?id=ID                 the patches the ITS selector chose: {"frames", "image_size", "boxes"}
    GET  /                              the search page (static/)

Every error is a JSON {"error": MESSAGE} with a 4xx status: 400 bad parameters or body (an id over
MAX_ID_CHARS), 404 unknown video or route, 413 a body over MAX_BODY_BYTES, 421 a Host header the server
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
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ..console import warn
from ..errors import PigError, UsageError
from .catalog import NotAvailable, VideoCatalog
from .guard import HostAndHeaders
from .searcher import Answer, Searcher

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 1 << 20     # a POST body: about 1 MiB of query texts
MAX_QUERY_CHARS = 2000       # one query (the text encoder keeps its first max_text_tokens tokens anyway)
MAX_BATCH = 1024             # queries in one POST
MAX_ID_CHARS = 1024          # a video id (/video, /thumb, /patches); longer ones are refused, never looked up

VideoId = Annotated[str, Query(max_length=MAX_ID_CHARS)]


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
               hosts=()) -> FastAPI:
    """Load the index (into RAM, with an fp16 copy for the scan unless fp16_copy is False), the query
    encoder and, with rerank, the EERCF head once; return the app. hosts: names it answers to besides
    127.0.0.1, localhost and ::1 (the Host header, any port)."""
    searcher = Searcher(index, model=model, device=device, rerank=rerank, rerank_weights=rerank_weights,
                        features=features, fp16_copy=fp16_copy)
    catalog = VideoCatalog(index)
    return build_app(searcher, catalog, hosts)


def build_app(searcher: Searcher, catalog: VideoCatalog, hosts=()) -> FastAPI:
    app = PigApp(hosts, title="pig serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.searcher, app.state.catalog = searcher, catalog
    _add_error_handlers(app)

    @app.get("/health")
    def health():
        return {"status": "ok", "videos": searcher.size, "model": searcher.index_model,
                "rerank": searcher.rerank_k, "pictures": catalog.available}

    @app.get("/search")
    def search_one(q: str | None = None, k: int = 10, rerank: int | None = None):
        if q is None:
            raise RequestError(400, "missing q: GET /search?q=a+red+car&k=10")
        answer = searcher.search([_check_query(q)], k, rerank)
        return _json(_results(answer, [q])[0], answer)

    @app.post("/search")
    async def search_batch(request: Request, k: int = 10, rerank: int | None = None):
        texts = _query_list(await _read_body(request))
        answer = await run_in_threadpool(searcher.search, texts, k, rerank)
        return _json(_results(answer, texts), answer)

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


def _results(answer: Answer, texts: list[str]) -> list[dict]:
    return [{"query": text, "truncated": truncated,
             "results": [{"rank": h.rank, "video": h.video, "score": round(h.score, 6)} for h in hits]}
            for text, hits, truncated in zip(texts, answer.hits, answer.truncated)]


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
