"""`pig serve`: search an index over HTTP. FastAPI and uvicorn are imported only when it runs, so
`pig --help` works without the `serve` extra.

The socket is bound before anything slow is loaded and before "serving ..." is printed: a busy port or a
bad host is one line and exit 1 at once. Exit codes: 0 stopped by Ctrl-C or SIGTERM (requests in flight
finish first); 1 could not start (index, extra, address); 2 usage error.
"""

from __future__ import annotations

import errno
import signal
import socket
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import PigError, UsageError
from .options import Device, QueryModel, Rerank, TokenFeatures, WeightCoarse, WeightFs, WeightFw, WeightPw, rerank_weights


def serve_cmd(
    index: Annotated[Optional[Path], typer.Argument(help="index file (default: $PIG_INDEX, else ./index.h5)")] = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on (0.0.0.0: every interface); the server "
                                      "answers to it and to 127.0.0.1, localhost, [::1] as Host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port (0: a free one, printed)")] = 8000,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        "--allow-host", metavar="NAME", help="another name the server may be reached by (the Host header; repeatable), e.g. the "
        "machine's name with --host 0.0.0.0; other names get 421 (DNS rebinding)")] = None,
    model: QueryModel = None,
    device: Device = "auto",
    rerank: Rerank = 0,
    w_fw: WeightFw = None,
    w_fs: WeightFs = None,
    w_pw: WeightPw = None,
    w_coarse: WeightCoarse = None,
    features: TokenFeatures = None,
    fp16_copy: Annotated[bool, typer.Option(
        "--fp16-copy/--no-fp16-copy", help="also hold an fp16 copy of an fp32 index for the scan (half the bytes a "
        "query reads; the same results; N x D x 2 bytes more RAM)")] = True,
    captions: Annotated[Optional[Path], typer.Option(
        "--captions", help="a captions file (any format pig eval reads): each video's first caption on its card, "
        "a few as example queries, and what a weak best match scores (below the best match of every one of "
        "up to 256 of them)")] = None,
    weak_below: Annotated[Optional[float], typer.Option(
        "--weak-below", help="the page says a query's best match is weak below this score (default: from "
        "--captions; without them, never)")] = None,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", help="torch threads per search (default: torch's, one per core); 1 where other processes "
        "share the cores: spinning threads made scans 8x slower there (benchmarks/RESULTS_serve.md)")] = None,
):
    """Search an index over HTTP: a JSON API and a search page with the videos and their ITS patches.

    Loads once, at startup: the whole index into RAM (N x D floats: 2 GiB for 1M videos at D = 512, and
    an fp16 copy for the scan, 1 GiB more; --no-fp16-copy leaves it out),
    the query encoder of the index's model and, with --rerank, the rerank head. Each query then costs
    the text encoding and one exact scan, the same ranking as pig rank --query on the same index.

    It has no authentication: keep it on 127.0.0.1 (the default) or a network you trust. It serves only the
    indexed videos' own files, and only while each still resolves to a regular file inside the folders the
    index recorded.

    Exit codes: 0 stopped (Ctrl-C, SIGTERM); 1 could not start (index, port in use, bad host); 2 usage error.

    API (errors: 4xx with {"error": ...}):
      GET  /search?q=TEXT&k=10[&rerank=K]   {"query", "truncated", "results": [{"rank", "video", "score"}]}
      GET  /search?like=ID&k=10              videos like that one (its stored vector as the query)
      GET  /search?...&format=csv            the results as CSV
      POST /search?k=10  body ["text", ...]  a list of those, the queries as one batch
      GET  /health                            videos, model, rerank, pictures, missing_videos, ...
      GET  /                                  the search page: /?q=TEXT&k=12 (or like=ID) searches,
                                              &show opens the first result, &show=ID that video;
                                              /video?id=ID plays a video's own file

    Examples:
      pig serve index.h5                      # then open http://127.0.0.1:8000/
      pig serve index.h5 --port 9000 --rerank 50
      pig serve index.h5 --captions test1ka.jsonl  # captions on the cards, example queries
      curl 'http://127.0.0.1:8000/search?q=a+red+car&k=5'
      curl -X POST 'http://127.0.0.1:8000/search?k=5' -d '["a red car", "a dog on a beach"]'
    """
    from ..console import log
    from ..errors import PigError
    from ..query.rank import default_index_path

    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (0: a free one), not {port}")
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as err:
        raise PigError(f"pig serve needs FastAPI and uvicorn ({err.name} is missing): pip install 'pigcli[serve]'") from None
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    index = default_index_path(index)
    with listening_socket(host, port) as sock:
        app = create_app(index, model=model, device=device, rerank=rerank, features=features,
                         rerank_weights=rerank_weights(w_fw, w_fs, w_pw, w_coarse), fp16_copy=fp16_copy,
                         hosts=[host, *(allow_host or [])], captions=captions, weak_below=weak_below)
        log(f"serving {index} ({app.state.searcher.size} videos) on {url(host, sock.getsockname()[1])}")
        run_until_stopped(uvicorn.Server(uvicorn.Config(app, log_level="warning")), sock)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening (uvicorn serves it); PigError, one line, if it cannot be."""
    name = host.strip("[]")  # [::1] as a URL writes it
    try:
        family, kind, proto, _, address = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM,
                                                              flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise PigError(f"cannot listen on {host}: unknown host ({getattr(err, 'strerror', None) or err})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts reuse the port
        sock.bind(address)
        sock.listen(2048)  # connections made once "serving ..." is printed wait here, not refused, till uvicorn runs
    except OSError as err:
        sock.close()
        hint = (" (another server? pick another --port, or --port 0 for a free one)" if err.errno == errno.EADDRINUSE
                else " (ports below 1024 need root)" if err.errno == errno.EACCES else "")
        raise PigError(f"cannot listen on {host}:{port}: {(err.strerror or str(err)).lower()}{hint}") from None
    return sock


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/" if ":" in host and not host.startswith("[") else f"http://{host}:{port}/"


def run_until_stopped(server, sock: socket.socket) -> None:
    """Serve on sock until Ctrl-C or SIGTERM, then return (exit 0). uvicorn finishes the requests in flight,
    then raises the signal again: SIGINT as KeyboardInterrupt, SIGTERM as one too while this runs."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
