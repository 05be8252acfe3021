"""The output folder of a run: its lock (re-entrant in a process, taken over from a run that died,
refusing one another live run holds), the temporary checkpoint files a killed write leaves, and
the check that its filesystem has room for a checkpoint."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import time
from typing import Any, Dict, List, Tuple

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to a pid file
    fcntl = None

__all__ = ["CHECKPOINT_NAME", "LOCK_NAME", "OutputFolderError", "check_free_space",
           "free_bytes", "lock_output_folder", "megabytes"]

CHECKPOINT_NAME = "checkpoint.pt"


class OutputFolderError(RuntimeError):
    """The output folder cannot take this run: in use by another run, not writable, or short of
    space for a checkpoint."""

def free_bytes(folder: str) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def megabytes(n: float) -> str:
    return f"{n / 2 ** 20:.1f} MB"


LOCK_NAME = ".wgangp-fast.lock"
# locks this process holds: real path of the folder -> [lock file descriptor, count, whether
# the lock created the folder]
_HELD_LOCKS: Dict[str, List[Any]] = {}


def _lock_holder(text: str) -> str:
    fields = text.split()
    if len(fields) >= 2:
        return f"pid {fields[0]} on {fields[1]}"
    return "a process whose pid the lock file does not say"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(folder: str, holder: str) -> OutputFolderError:
    return OutputFolderError(
        f"--out {folder} is in use by another wgangp-fast run ({holder}): two runs on one folder "
        f"would overwrite each other's checkpoint and outputs. Wait for that run to end (or stop "
        f"it), or give this run another output folder (--out)")


def _read_lock(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace")


def _take_lock(folder: str, path: str) -> Tuple[int, str]:
    """An open, locked lock file in `folder` and what it said before (a dead holder's pid)."""
    dead = ""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL), 0o644)
        except FileExistsError:  # the pid-file fallback
            with open(path) as f:
                text = f.read()
            fields = text.split()
            pid = int(fields[0]) if fields and fields[0].isdigit() else None
            if pid is not None and pid != os.getpid() and _pid_alive(pid):
                raise _in_use(folder, _lock_holder(text)) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            dead = text
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                text = _read_lock(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise _in_use(folder, _lock_holder(text)) from None
                raise
            # the holder removes the file when it ends: a lock on a file no longer at `path`
            # guards nothing, so start again
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        before = _read_lock(fd) or dead
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.0f}\n".encode())
        return fd, before
    raise OutputFolderError(f"--out {folder}: could not take the lock {path} (it keeps being "
                            f"replaced)")


def _remove_stale_temporaries(folder: str) -> List[str]:
    """Temporary checkpoint files that a killed write left behind (atomic_save's own are removed
    when the write fails; a SIGKILL leaves them). Only called with the folder's lock held, so
    no live run of ours is writing them."""
    prefix = "." + CHECKPOINT_NAME + "."
    removed = []
    for name in os.listdir(folder):
        if name.startswith(prefix) and name.endswith(".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed


class _FolderLock:
    """What lock_output_folder returns: which stale lock it took over and which stale temporary
    files it removed (both empty for a clean folder)."""

    def __init__(self, folder: str, key: str, stale_holder: str, removed: List[str]) -> None:
        self.folder, self._key = folder, key
        self.stale_holder, self.removed = stale_holder, removed
        self._released = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        entry = _HELD_LOCKS.get(self._key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _HELD_LOCKS[self._key]
            # removed before it is unlocked, so a run that opens it meanwhile sees it gone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._key, LOCK_NAME))
            os.close(entry[0])
            if entry[2]:
                # a run refused at start leaves no empty folder behind (rmdir only removes an
                # empty one)
                with contextlib.suppress(OSError):
                    os.rmdir(self._key)

    def __enter__(self) -> _FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_output_folder(folder: str) -> _FolderLock:
    """Lock `folder` for this run (re-entrant within a process): creates the folder, checks that
    it is writable, refuses a folder another live run holds (naming its pid), takes over the lock
    of a run that died, and removes the temporary files of checkpoint writes that a kill
    interrupted. Use as a context manager, or call .release().

    The lock is an flock on `folder/.wgangp-fast.lock`, which also holds the holder's pid and
    host: the kernel drops it when the holder dies, even by SIGKILL, so a stale lock never
    blocks a new run."""
    created = not os.path.exists(folder)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputFolderError(f"--out {folder}: cannot create the output folder "
                                f"({exc.strerror or exc}): choose a folder you can write to") \
            from None
    if not os.path.isdir(folder):
        raise OutputFolderError(f"--out {folder} exists and is not a folder")
    key = os.path.realpath(folder)
    entry = _HELD_LOCKS.get(key)
    if entry is not None:
        entry[1] += 1
        return _FolderLock(folder, key, "", [])
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputFolderError(f"--out {folder}: the folder is not writable by this user: fix "
                                f"its permissions or choose another output folder (--out)")
    try:
        fd, before = _take_lock(folder, os.path.join(key, LOCK_NAME))
    except OSError as exc:
        raise OutputFolderError(f"--out {folder}: cannot write in the output folder "
                                f"({exc.strerror or exc}): fix its permissions or free space, "
                                f"or choose another output folder (--out)") from None
    _HELD_LOCKS[key] = [fd, 1, created]
    stale = _lock_holder(before) if before.split() and before.split()[0] != str(os.getpid()) \
        else ""
    return _FolderLock(folder, key, stale, _remove_stale_temporaries(key))


def check_free_space(folder: str, need: int) -> None:
    """OutputFolderError unless the filesystem of `folder` has `need` bytes free (unknown free
    space passes)."""
    free = free_bytes(folder)
    if free is not None and free < need:
        raise OutputFolderError(
            f"--out {folder}: {megabytes(free)} free on its filesystem, but a checkpoint of this run "
            f"needs about {megabytes(need)}: free some space or choose another output folder (--out)")
