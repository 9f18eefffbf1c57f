"""Writing output files atomically: a temp file in the target directory, then a rename, so a
failure never leaves a half-written file; the result gets the mode open() would give it. A
temp file a killed run left behind is removed by the next write to that target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from costsim.errors import CostsimError


def check_target(path: Path | str, what: str = "output") -> Path:
    """Raise CostsimError unless ``path`` can be written as a file in an existing directory."""
    path = Path(path)
    try:
        if not path.parent.is_dir():
            raise CostsimError(f"{path}: directory {path.parent} does not exist")
        if path.is_dir():
            raise CostsimError(f"{path}: is a directory; give a file name for the {what}")
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise CostsimError(f"{path}: not a regular file; the {what} replaces only regular files")
        # the directory takes a new file (the temp file an atomic write renames): checked now, before
        # any work, so that a later output of the same command is not left written alone
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".costsim-probe-"):
            pass
    except OSError as e:  # name too long, permission denied on a parent, a read-only directory, ...
        raise CostsimError(f"{_short_path(path)}: cannot write the {what} ({e.strerror or e})") from None
    return path


def _short_path(path: Path) -> str:
    s = str(path)
    return s if len(s) <= 120 else s[:60] + "..." + s[-40:]


MAX_INPUT_BYTES = 64 * 2**20


def check_input(path: Path | str, max_bytes: int = MAX_INPUT_BYTES) -> Path:
    """Raise CostsimError unless ``path`` is a regular file of at most ``max_bytes`` (a device,
    a FIFO or a directory is refused before anything reads it)."""
    path = Path(path)
    try:
        if not path.exists():
            raise CostsimError(f"{_short_path(path)}: no such file")
        if not path.is_file():
            raise CostsimError(f"{path}: not a regular file")
        if path.stat().st_size > max_bytes:
            raise CostsimError(f"{path}: {path.stat().st_size:,} bytes, more than the {max_bytes:,} read at most")
    except OSError as e:
        raise CostsimError(f"{_short_path(path)}: cannot read file ({e.strerror or e})") from None
    return path


def file_mode(path: Path) -> int:
    """The existing file's mode, else 0o666 less the umask (as open() does)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_TMP_TAG = ".costsim-"  # temp files: .<name>.costsim-<pid>-<random><suffix>


def _tmp_prefix(path: Path, pid: int | None = None) -> str:
    return f".{path.name[:64]}{_TMP_TAG}{os.getpid() if pid is None else pid}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or not a pid): leave its file alone
    return True


def remove_stale_temps(path: Path) -> int:
    """Delete temp files an earlier write to ``path`` left behind when it was killed (SIGKILL
    leaves no chance to clean up): ``.<name>.costsim-<pid>-*`` whose process is gone. Returns
    how many were removed; errors are ignored (another run may be cleaning them too)."""
    head = f".{path.name[:64]}{_TMP_TAG}"
    removed = 0
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(head):
            continue
        pid = name[len(head):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def atomic_write(path: Path | str, write: Callable[[str], None], what: str = "output") -> None:
    """Call ``write(tmp_path)`` to produce the file, then move it into place at ``path``.

    The temp file sits beside the target; one left by a run that was killed is removed by
    the next write to the same target (``remove_stale_temps``)."""
    path = check_target(path, what)
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=path.suffix[:16] or ".tmp")
    except OSError as e:
        raise CostsimError(f"{_short_path(path)}: cannot write the {what} ({e.strerror or e})") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode(path))
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only file system, name too long, permission
        Path(tmp).unlink(missing_ok=True)
        raise CostsimError(f"{path}: cannot write the {what} ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str, what: str = "output") -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text), what)
