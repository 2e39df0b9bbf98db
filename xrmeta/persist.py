"""Crash-safe model directories: atomic save with a checksummed manifest, and an append-only item log.

A model directory is a *snapshot* plus an optional *log*:

- the snapshot is written whole into a temporary sibling, fsync'd, then renamed into place, so a crash at any
  moment leaves either the previous snapshot or the new one, never a mix. Its `config.json` is written last and
  carries the manifest: size and sha256 of every other file (whatever the writer put there), checked on load so
  that a truncated or corrupted file is named instead of failing somewhere inside numpy or PECOS;
- the log (`items.log`, not in the manifest: it grows after the snapshot) records each acknowledged batch of
  inserts and removals (and each compaction) made since that snapshot, one line per batch with its own checksum,
  fsync'd before the batch becomes visible. Loading replays it. A crash mid-append leaves an unterminated last
  line, which is ignored: that batch was never acknowledged. A new snapshot starts with no log, so rotation is
  the rename itself.

Replacing a directory takes two renames (POSIX has no portable atomic directory swap): the previous snapshot is
moved to `.<name>.old`, then the new one to `<name>`. Between the two, only `.<name>.old` exists; `recover` (run
by every read and write) moves it back. One process writes a directory at a time; a process that logs holds an
exclusive lock on the log, and saving over a directory whose log another process holds is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

CONFIG = "config.json"
LOG = "items.log"


class PersistError(ValueError):
    pass


# ---------------------------------------------------------------- fsync
def fsync_path(path: Path) -> None:
    """Flush a file's data, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under root (a new file is durable only once its directory entry is)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_path(Path(dirpath, name))
        fsync_path(Path(dirpath))


# ---------------------------------------------------------------- manifest
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(root: Path) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file under root but the config and the log."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in (CONFIG, LOG):
            out[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def verify(folder: Path, files: dict[str, dict]) -> None:
    """Check every file of the manifest; the error names the first bad file."""
    if not isinstance(files, dict):
        raise PersistError(f"{folder / CONFIG}: the manifest ('files') is not a mapping")
    for rel, want in sorted(files.items()):
        path = folder / rel
        if not isinstance(want, dict) or ".." in Path(rel).parts:
            raise PersistError(f"{folder / CONFIG}: bad manifest entry {rel!r}")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise PersistError(f"{path}: missing (listed in {CONFIG})") from None
        if size != want.get("size"):
            raise PersistError(f"{path}: {size} bytes, {CONFIG} says {want.get('size')} (truncated or replaced)")
        if sha256_file(path) != want.get("sha256"):
            raise PersistError(f"{path}: checksum mismatch (corrupted or modified since it was saved)")


# ---------------------------------------------------------------- directories
def _old(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.old")


def recover(folder: Path) -> None:
    """Finish the rollback of a save that crashed between its two renames: the previous snapshot comes back."""
    old = _old(folder)
    if not folder.exists() and old.is_dir():
        os.rename(old, folder)
        fsync_path(folder.parent)


def read_config(folder: Path) -> dict:
    """The parsed config.json of a model directory (after `recover`); clear errors when missing or garbled."""
    folder = Path(folder)
    recover(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise PersistError(f"{folder}: not an xrmeta model directory (no {CONFIG})")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PersistError(f"{path}: not valid JSON ({e}): truncated or corrupted") from None
    if not isinstance(config, dict):
        raise PersistError(f"{path}: expected a JSON object")
    return config


@contextlib.contextmanager
def write_dir(folder: Path, config: dict) -> Iterator[Path]:
    """Write a snapshot atomically: yields an empty temporary directory to fill; on a normal exit, writes
    config.json (config plus the manifest of every file written), fsyncs everything and renames it over folder.
    On an exception the temporary directory is removed and folder is untouched."""
    folder = Path(folder)
    check_target(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover(folder)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a crashed save (one writer at a time)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield tmp
        config = dict(config, files=manifest(tmp))
        (tmp / CONFIG).write_text(json.dumps(config, indent=1), encoding="utf-8")
        fsync_tree(tmp)
        swap(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover(folder)  # in case the failure came between the two renames
        raise


def swap(new: Path, folder: Path) -> None:
    """Put the complete, fsync'd snapshot directory new in folder's place (two renames, see the module doc)."""
    old = _old(folder)
    if old.exists():  # a crash after an earlier swap left it; folder exists (recover ran), so it is stale
        shutil.rmtree(old)
    if folder.exists():
        os.rename(folder, old)  # the previous snapshot stays whole under .old until the new one is in place
    os.rename(new, folder)  # the commit point
    fsync_path(folder.parent)
    shutil.rmtree(old, ignore_errors=True)


def check_target(folder: Path) -> None:
    """A save replaces the whole directory: refuse one that holds something other than a model."""
    if folder.exists() and not folder.is_dir():
        raise PersistError(f"{folder}: exists and is not a directory")
    if folder.is_dir() and not (folder / CONFIG).exists() and any(folder.iterdir()):
        raise PersistError(f"{folder}: not empty and not an xrmeta model directory; refusing to replace it")


def write_file(path: Path, data: bytes) -> None:
    """Replace a file atomically: a temporary sibling, fsync'd, renamed over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


def copy_tree(src: Path, dst: Path, link: bool) -> None:
    """Copy a directory; with link, hard-link its files instead (falling back to copies): only safe when src is
    about to be replaced, since both names then share the bytes."""
    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy if link else shutil.copy2)


# ---------------------------------------------------------------- item log
def _encode(record: dict) -> bytes:
    payload = json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode("ascii")  # no raw newline
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def _parse_log(path: Path, data: bytes) -> tuple[list[dict], int]:
    """(records, bytes they span). Every terminated line must be a valid record; an unterminated last line is a
    torn append (never acknowledged) and is left out."""
    records, end = [], 0
    lines = data.split(b"\n")
    for n, line in enumerate(lines[:-1], 1):
        crc, _, payload = line.partition(b" ")
        try:
            ok = int(crc, 16) == zlib.crc32(payload)
            record = json.loads(payload) if ok else None
        except ValueError:
            ok = False
        if not ok or not isinstance(record, dict):
            raise PersistError(f"{path} line {n}: corrupted record (bad checksum or format)")
        records.append(record)
        end += len(line) + 1
    return records, end


def read_log(folder: Path) -> list[dict]:
    """Records of folder's log, oldest first ([] without a log)."""
    path = Path(folder) / LOG
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return _parse_log(path, data)[0]


def check_no_writer(folder: Path) -> None:
    """Raise if another open ItemLog (any process) holds folder's log: replacing the directory would cut it off."""
    path = Path(folder) / LOG
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):  # no log: nobody logs there
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PersistError(f"{path}: the model directory is in use by a process that logs to it") from None
    finally:
        os.close(fd)  # closing drops our lock


class ItemLog:
    """Append-only, fsync'd log of a model directory, held under an exclusive lock (one writer)."""

    def __init__(self, folder: Path, fd: int, size: int):
        self.folder = Path(folder)
        self.path = self.folder / LOG
        self._fd = fd
        self._size = size

    @classmethod
    def open(cls, folder: Path) -> tuple[ItemLog, list[dict]]:
        """Lock (creating if needed) folder's log; returns it and its records. A torn tail is cut off here."""
        path = Path(folder) / LOG
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            records, size = _parse_log(path, data)
            if size < len(data):  # cut the torn tail, or the next record would follow garbage
                os.ftruncate(fd, size)
            os.fsync(fd)
            fsync_path(Path(folder))  # the file's directory entry, when it was just created
        except BlockingIOError:
            os.close(fd)
            raise PersistError(f"{path}: locked by another writer (one process logs to a directory)") from None
        except BaseException:
            os.close(fd)
            raise
        return cls(folder, fd, size), records

    def append(self, record: dict) -> None:
        """Write and fsync one record; when this returns the record survives a crash. On failure the log is cut
        back to where it was, so a half-written record never precedes later ones."""
        data = _encode(record)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()
