"""`python -m pigcli ...`: the same as the `pig` command."""

from .cli import app

app()
