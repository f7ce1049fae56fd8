"""pig: text-to-video retrieval with pseudo-query interaction (PIG) as composable HDF5 stages.

The library face: each `pig` command's function, importable from here (training: the package
pigcli.train, `pigcli.train.train(pigcli.train.TrainConfig(...))`). Lazy, so `import pigcli` costs
nothing until a name is used (the CLI imports this package too).

    import pigcli
    pigcli.build_index(["videos/"], "index.h5", model="models/pig-b32")
    ranking = pigcli.rank("index.h5", queries=[pigcli.Query("q1", "a man plays a guitar")], k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module (under pigcli) that defines it
_WHERE = {
    "extract": "stages.extract", "frames": "stages.frames", "select": "stages.select",
    "generate": "stages.generate", "fuse": "stages.fuse", "embed_text": "stages.embed_text",
    "build_index": "stages.index",
    "Query": "inputs.captions", "load_queries": "inputs.captions", "load_captions": "inputs.captions",
    "rank": "query.rank", "Ranking": "query.rank", "write_ranking": "query.rank",
    "evaluate": "query.evaluate", "tune_rerank": "query.tune_rerank", "OpenedIndex": "query.opened",
    "SourceVideos": "query.media", "explain": "query.media",
    "init_random": "model.factory", "init_from_clip": "model.factory",
    "load_checkpoint": "model.checkpoint", "load_text_encoder": "model.text_encoder",
}
__all__ = ["__version__", *_WHERE]

if TYPE_CHECKING:  # pragma: no cover
    from .inputs.captions import Query, load_captions, load_queries
    from .model.checkpoint import load_checkpoint
    from .model.factory import init_from_clip, init_random
    from .model.text_encoder import load_text_encoder
    from .query.evaluate import evaluate
    from .query.media import SourceVideos, explain
    from .query.opened import OpenedIndex
    from .query.rank import Ranking, rank, write_ranking
    from .query.tune_rerank import tune_rerank
    from .stages.embed_text import embed_text
    from .stages.extract import extract
    from .stages.frames import frames
    from .stages.fuse import fuse
    from .stages.generate import generate
    from .stages.index import build_index
    from .stages.select import select


def __getattr__(name: str):
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'pigcli' has no attribute {name!r}")
