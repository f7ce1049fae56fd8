"""The accepted values of every option that takes one of a fixed set, and the one check of them.

The library (which checks what it is given) and the CLI options (whose --help lists the values, and
which refuse others before a command runs) both take the tuples from here, so the two cannot drift.
Nothing heavy is imported: `pig --help` reads this module.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")       # auto: bf16 on a GPU, fp32 on the CPU
SELECTORS = ("its", "random")                       # random: the ablation baseline, no information from ITS
BACKBONES = ("vip", "frames")                       # video proxy tokens | CLIP per frame (CLIP4Clip style)
DECODERS = ("auto", "decord", "pyav", "torchcodec")  # auto: decord if installed, else PyAV
SAMPLINGS = ("uniform", "centre")                   # the official linspace | segment centres
RESIZES = ("squash", "crop")                        # the official S x S, aspect squashed | short side to S, centre crop
METHODS = ("pig", "meanpool", "xpool", "eercf")     # what a model computes (pig train --method)
INDEX_METHODS = ("pig", "meanpool", "eercf")        # those with a query-independent video vector (pig fuse)
RANK_METHODS = ("index", "xpool")                   # how rank and eval score query and video
FORMATS = ("tsv", "jsonl", "trec", "html")          # pig rank's output
SEARCH_FORMATS = ("json", "csv")                    # pig serve's GET /search answer
ANN_TYPES = ("ivfpq", "hnsw", "flat")               # pig index-ann
PRESETS = ("tiny", "toy", "b32")                    # random CLIPs of these sizes (pig init --preset)


def check_choice(option: str, value, allowed: Sequence[str], error: type[Exception] = UsageError) -> None:
    """Refuse a value that is not one of `allowed`, naming the option as the command line spells it."""
    if value not in allowed:
        raise error(f"{option} must be one of {', '.join(allowed)}, not {value!r}")
