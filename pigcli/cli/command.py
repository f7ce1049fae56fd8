"""`PigCommand`, the class of every `pig` command: where known errors become one line and an exit code.

  - pigcli.errors.PigError: 'error: MESSAGE' on stderr, exit err.exit_code (1; UsageError 2);
  - any other exception: 'error: Type: message (set PIG_DEBUG=1 for the traceback)', exit 1;
  - PIG_DEBUG=1 (or true, yes, on; 0 and false are off): both are re-raised, with their traceback;
  - click's usage errors (bad option values, missing arguments) keep click's handling (exit 2).

It also fills in the value of an option given without one (options.BARE_VALUES: `--rerank` alone
means --rerank auto) before click parses the command line.
"""

from __future__ import annotations

import sys

import click
import typer
from typer.core import TyperCommand

from ..console import env_flag
from ..errors import PigError
from .options import BARE_VALUES
from .output import EXIT_FATAL

# click's usage errors keep click's own handling (exit 2); typer may vendor its own copy of click.
CLICK_ERRORS = tuple({click.exceptions.ClickException,
                      *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})


class PigCommand(TyperCommand):
    def parse_args(self, ctx, args: list[str]) -> list[str]:
        options = {opt for param in self.params for opt in getattr(param, "opts", ())}
        bare = {name: value for name, value in BARE_VALUES.items() if name in options}
        return super().parse_args(ctx, fill_bare_values(args, bare) if bare else args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt) + CLICK_ERRORS:
            raise
        except PigError as err:
            fail(str(err), err.exit_code)
        except Exception as err:  # unknown failures: still one line unless debugging
            fail(f"{type(err).__name__}: {err} (set PIG_DEBUG=1 for the traceback)", EXIT_FATAL)


def fail(message: str, code: int):
    """'error: MESSAGE' on stderr and exit `code`; with PIG_DEBUG=1, re-raise the error being handled."""
    if env_flag("PIG_DEBUG") and sys.exc_info()[0] is not None:
        raise
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def fill_bare_values(args: list[str], bare: dict[str, object]) -> list[str]:
    """`args` with the value of each option in `bare` inserted where the option is given without one:
    last on the line, or followed by something that is not an integer (another option, an argument).
    An integer after it, negative ones included, or the bare value itself (`--rerank auto`) is its
    value; `--rerank=20` is left alone. Nothing after `--` is touched."""
    filled: list[str] = []
    for i, arg in enumerate(args):
        filled.append(arg)
        if arg == "--":
            filled.extend(args[i + 1:])
            break
        if arg in bare and (i + 1 == len(args) or not (args[i + 1].lstrip("-").isdigit()
                                                       or args[i + 1] == str(bare[arg]))):
            filled.append(str(bare[arg]))
    return filled
