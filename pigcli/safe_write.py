"""The one rule for every path pig writes: models, run folders, rankings, pictures, stage files, locks
and temporaries.

  - pig creates a path, or replaces what is there only when pig made it (each writer says how it knows
    its own kind: a stage file's attributes, a model folder's checkpoint.json, a ranking's lines...);
    an empty folder holds nothing to lose and counts as free. Anything else is refused with one line,
    even with --force: --force only lets pig replace its own files.
  - pig never follows a symbolic link at its own temporary or lock names: they are created exclusively
    (O_CREAT | O_EXCL | O_NOFOLLOW, or mkdir) in the target's folder, then renamed into place, so a
    killed write leaves the previous file (or nothing) and never a half-written one at the target.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Callable, Iterator

from .errors import PigError


def check_target(target: Path, kind: str, is_own: Callable[[Path], bool], force: bool | None = None) -> None:
    """Refuse to write `target` unless it is free or pig's own `kind` (e.g. 'pig model folder').

    force None: pig's own file is replaced without asking (results, a run's own checkpoints); False:
    refused with a hint at --force; True: replaced. Never a path that pig did not make."""
    target = Path(target)
    if not os.path.lexists(target) or _is_empty_folder(target):
        return
    if target.is_symlink():
        refuse_foreign(target, "is a symbolic link")
    if not is_own(target):
        refuse_foreign(target, f"exists and is not a {kind}")
    if force is False:
        raise PigError(f"{target} is a {kind} already; use --force to replace it, or -o to write elsewhere")


@contextlib.contextmanager
def write_errors(target: Path) -> Iterator[None]:
    """A failed write (a full disk, no permission...) as one line naming `target`, not a raw exception:
    OSError, and a library's own error that reports a full disk in its text (safetensors, HDF5)."""
    try:
        yield
    except PigError:
        raise
    except Exception as err:
        if is_disk_full(err):
            reason = os.strerror(errno.ENOSPC) + "; free some space or choose another -o"
        elif isinstance(err, OSError):
            reason = err.strerror or str(err)
        else:
            raise
        raise PigError(f"cannot write {target}: {reason}") from None


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC, also as the text of HDF5's or safetensors' own errors."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    return "No space left" in text or "errno = 28" in text


def refuse_foreign(target: Path, why: str) -> None:
    """The one-line refusal of a path that is not pig's to replace."""
    raise PigError(f"{target} {why}; pig never replaces it (--force neither): choose another -o "
                   "(or move it away yourself)")


def _is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def create_exclusive(path: Path, mode: int = 0o666) -> int:
    """Open a new file at `path` for writing, failing if anything (a link included) is there already."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def open_no_follow(path: Path, mode: int = 0o644) -> int:
    """Open (or create) pig's own file at `path` read-write, refusing a symbolic link there (a lock)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError:
        if os.path.islink(path):
            raise PigError(f"{path} is a symbolic link where pig keeps its own file; pig does not follow it: "
                           "remove the link") from None
        raise


def temporary_file(target: Path) -> Path:
    """A new, empty file next to `target` (same folder: the rename is atomic), named
    .NAME.RANDOM.tmp, created exclusively (never through a link). The caller writes it, then
    `os.replace`s it onto the target, or unlinks it."""
    return _create_next_to(target, ".tmp", lambda path: os.close(create_exclusive(path)))


def _create_next_to(target: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """create(.NAME.RANDOM{suffix}) in target's folder, with a new RANDOM while that name is taken."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = target.with_name(f".{target.name}.{secrets.token_hex(4)}{suffix}")
        try:
            create(path)
            return path
        except FileExistsError:
            continue


def remove_stale_temporaries(target: Path) -> None:
    """Remove the temporaries of `target` that a killed writer left (temporary_file's names, regular
    files of this user; never a link). Call only while holding the target's lock: none is in use."""
    target = Path(target)
    name = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{8}}\.tmp")
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if name.fullmatch(path.name) and stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """with replacing(OUT) as tmp: write tmp; on success it becomes OUT (atomic), on any failure it is
    removed and OUT keeps what it held."""
    tmp = temporary_file(target)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def write_bytes(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically (the checks are the caller's: check_target)."""
    with replacing(target) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def temporary_folder(target: Path) -> Iterator[Path]:
    """A new empty folder next to `target` (.NAME.RANDOM.partial; mkdir never follows a link), removed
    on exit unless it was renamed away (replace_folder)."""
    folder = _create_next_to(target, ".partial", os.mkdir)  # the usual permissions, unlike mkdtemp's 0700
    try:
        yield folder
    finally:
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def replace_folder(staging: Path, target: Path) -> None:
    """Put the finished folder `staging` at `target` (checked by check_target first: free or pig's own).
    An old folder is swapped with the new one in one step (renameat2 RENAME_EXCHANGE) and then removed;
    where the system cannot swap, it is moved aside, the new one renamed in, then the old one removed."""
    target = Path(target)
    if not os.path.lexists(target) or _is_empty_folder(target):
        os.replace(staging, target)  # rename(2) replaces an empty folder
        return
    if _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # now the old folder
        return
    aside = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
    os.replace(target, aside)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is unavailable."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0
