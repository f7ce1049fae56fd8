"""The `pig` Typer app: every command, registered here in the order `pig --help` lists them.

Commands live in one module per group (stages, search, train, toy, tools) as plain functions; this
module registers each one with `PigCommand` (cli/command.py: one-line errors and exit codes).
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import search, serve, stages, tools, toy, train
from .command import PigCommand

app = typer.Typer(
    help="pig: text-to-video retrieval with pseudo-query interaction (PIG) and EERCF reranking.\n\n"
    "Every stage reads and writes HDF5, so any stage can be inspected (pig inspect) and rerun alone. "
    "Results go to stdout (a stage prints the path it wrote), logs to stderr. Exit codes: 0 ok, "
    "1 error, 2 usage error, 3 some inputs failed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"pig {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    pass


def _add(group: typer.Typer, name: str, func) -> None:
    group.command(name, cls=PigCommand)(func)


_add(app, "init", stages.init_cmd)
_add(app, "extract", stages.extract_cmd)
_add(app, "frames", stages.frames_cmd)
_add(app, "segments", stages.segments_cmd)
_add(app, "select", stages.select_cmd)
_add(app, "generate", stages.generate_cmd)
_add(app, "fuse", stages.fuse_cmd)
_add(app, "embed-text", stages.embed_text_cmd)
_add(app, "merge", stages.merge_cmd)
_add(app, "index", stages.index_cmd)
_add(app, "rank", search.rank_cmd)
_add(app, "eval", search.eval_cmd)
_add(app, "tune-rerank", search.tune_rerank_cmd)
_add(app, "index-ann", search.index_ann_cmd)
_add(app, "serve", serve.serve_cmd)
_add(app, "train", train.train_cmd)
_add(app, "inspect", tools.inspect_cmd)
_add(app, "explain", tools.explain_cmd)
_add(app, "demo", tools.demo_cmd)

toy_app = typer.Typer(help="The built-in toy text-video corpus.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")
_add(toy_app, "make", toy.toy_make_cmd)
