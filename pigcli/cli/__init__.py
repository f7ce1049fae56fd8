"""The `pig` command line: thin Typer commands over the library functions.

    pig.py      the Typer app (`app`): --version and every command, registered in help order
    command.py  PigCommand: known errors -> one line on stderr and an exit code; bare option values
    options.py  shared options as Annotated types, and the choices (str enums) they take
    output.py   the output contract: what goes to stdout (paths, --json objects), exit codes
    stages.py   init, extract, select, generate, fuse, embed-text, index
    search.py   rank, eval
    train.py    train
    toy.py      toy make
    tools.py    inspect, demo

Heavy imports (torch, transformers, h5py, numpy) happen inside the commands, so that `pig --help`
is instant.
"""

from .pig import app

__all__ = ["app"]
