"""The data dir and the files in it are the owner's only: they hold keys, password hashes, encrypted
credentials and every run's inputs and checkpoints.

The SQLite file is created here, empty and private, before the first connection would create it with the
umask's mode; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode. Files an earlier version
(or another tool) left readable to others are tightened at start-up.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def _tighten(path: Path) -> bool:
    """Drop group and other permissions of a file or directory we own; a symlink is left alone."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode) or not info.st_mode & _OTHERS or info.st_uid != os.getuid():
        return False
    path.chmod(stat.S_IMODE(info.st_mode) & ~_OTHERS)
    return True


def _database_files(database: Path) -> list[Path]:
    # ``aiops.db``, its ``-wal``/``-shm``/``-journal`` companions and ``aiops.checkpoints.db`` with its own.
    return [database, *database.parent.glob(f"{database.stem}.*")]


def secure_data_files(data_dir: Path, database: Path | None) -> list[str]:
    """On the embedded database (``database``, the SQLite file) create the data dir (0700) and the file
    (0600) if missing; tighten those that are looser, with every regular file in the data dir and the
    database's companions. Returns the tightened paths. (On PostgreSQL the data dir is created only when a
    development secret is written into it.)"""
    if database is not None:
        data_dir.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    candidates = [data_dir, *data_dir.iterdir()] if data_dir.is_dir() else []
    if database is not None:
        database.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
        candidates += _database_files(database)
    tightened: list[str] = []
    for path in dict.fromkeys(candidates):  # the database is often in the data dir: each path once
        if (path == data_dir or not path.is_dir()) and _tighten(path):
            tightened.append(str(path))
    return tightened
