"""File helpers shared by every package, with no heavy imports (serving uses them without torch).

Everything ptv2 writes goes through here: a file or a folder is built under a temp name in the
same directory and renamed into place, so a killed run never leaves half an artifact.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from ptv2.errors import ArtifactError, Ptv2Error, machine_error


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"  # what a clone without git-lfs holds for a big file


def lfs_pointer(path: str | Path) -> str | None:
    """The one line for a Git LFS pointer standing where a file should be (a model or data repository cloned
    without git-lfs: its weights and data are ~130-byte text stubs), else None."""
    p = Path(path)
    try:
        if not p.is_file() or p.stat().st_size > 1024:
            return None
        with open(p, "rb") as f:
            head = f.read(len(LFS_POINTER))
    except OSError:
        return None
    if head != LFS_POINTER:
        return None
    return (f"{p} is a Git LFS pointer, not the file itself (cloned without git-lfs): fetch it with "
            f"`git lfs install && git lfs pull` in its repository, or download the file")


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets it too, racing other threads' files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def _as_created(path: Path) -> None:
    """mkstemp / mkdtemp (and safetensors) make 0600 / 0700 whatever the umask: give an output and all it holds
    the modes a plain open() / mkdir() would (a server running as another user must be able to read a bundle)."""
    mask = _umask()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _check_parents(path: Path) -> None:
    """No file stands where one of ``path``'s folders would go (mkdir's FileExistsError otherwise), and the
    folder that would hold ``path`` takes new files (``check_writable``)."""
    clash = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if clash is not None:
        raise ArtifactError(f"cannot write {str(path)!r}: {str(clash)!r} is a file, not a folder; "
                            f"pick another output path")
    check_writable(path.parent)


def check_writable(folder: Path) -> None:
    """New files can be made in ``folder``, or where it does not exist yet, in its nearest existing parent (where
    it would be made): probed with a temp file, since permissions alone do not tell (root in /proc, a read-only
    mount). Else one line, before any work (a table's ``--out`` under /proc failed after every run)."""
    base = next(p for p in [folder, *folder.parents] if p.exists())
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".ptv2-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ArtifactError(f"cannot write in {str(folder)!r}: {str(base)!r} takes no new files ({e.strerror or e}); "
                            f"pick another output path") from None


def check_file_target(path: Path) -> None:
    """A file can be written at ``path`` (callers check before long work; ``atomic_file`` again)."""
    _check_parents(path)
    if path.is_dir():
        raise ArtifactError(f"cannot write {str(path)!r}: it is a folder; pass a file path such as reports/table.md")
    if path.exists() and not path.is_file():  # /dev/stdout, a pipe: the atomic rename replaced the link or node
        # itself with a file of ours (as root, /dev/stdout became a regular file in /dev)
        raise ArtifactError(f"cannot write {str(path)!r}: it is a device or pipe, not a file; pass a file path such "
                            f"as reports/table.md and read it from there")


def out_of_space(folder: Path) -> bool:
    """The file system holding ``folder`` has (next to) no free blocks or no free inodes left: what a failed write
    meant whose library hid the OSError (safetensors: "I/O error: ... (os error 28)", torch.save: "unexpected pos
    576 vs 534"). Root may write into the blocks a file system reserves, so its count includes them."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    root = os.geteuid() == 0
    blocks, inodes = (st.f_bfree, st.f_ffree) if root else (st.f_bavail, st.f_favail)
    return blocks * st.f_frsize < (1 << 20) or (st.f_files > 0 and inodes == 0)


@contextlib.contextmanager
def _full_disk_is_one_line(target: Path) -> Iterator[None]:
    """A write into ``target`` that failed on a full disk is the user's one line (``errors._MACHINE``), naming the
    folder to free space in (``target`` may be a temp name), whatever the library that wrote it raised; checked
    before the temp output is removed (which frees the space)."""
    try:
        yield
    except Exception as e:
        if isinstance(e, Ptv2Error):
            raise
        if out_of_space(target.parent):
            raise machine_error(errno.ENOSPC, target.parent) from e
        # libraries write beside the output in the temporary folder too (onnxruntime's quantizer: a full TMPDIR on
        # another file system was onnx's "DecodeError: Wire format was corrupt" reading back its truncated file)
        if out_of_space(Path(tempfile.gettempdir())):
            raise Ptv2Error(f"{os.strerror(errno.ENOSPC)} ({tempfile.gettempdir()}, the temporary folder): free "
                            f"space there, or point TMPDIR at a folder with room") from e
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yields a temp path next to ``path``; renamed onto ``path`` when the block succeeds, removed if not."""
    path = Path(path)
    check_file_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        with _full_disk_is_one_line(path):
            yield Path(tmp)
        _as_created(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Temp file + fsync + rename: readers never see half a file. UTF-8 whatever the locale: reports hold
    '—', '±' and '→', which an ASCII or cp1252 locale cannot encode, and outputs travel between hosts."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written ``tmp`` folder into ``target`` (old one removed after the swap)."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(target: Path, owned: Callable[[Path], bool], what: str) -> None:
    """Refuse (one line) to replace an existing ``target`` unless it is an empty folder or ``owned`` by ptv2
    as an earlier ``what``; callers check before long work, ``atomic_dir`` again before the swap."""
    _check_parents(target)
    if target.exists() and not (target.is_dir() and (not any(target.iterdir()) or owned(target))):
        raise ArtifactError(f"{str(target)!r} exists and is not {what}: ptv2 replaces only its own output; "
                            f"pick another output path or remove it first")


@contextlib.contextmanager
def atomic_dir(target: str | Path, owned: Callable[[Path], bool], what: str) -> Iterator[Path]:
    """Yields an empty temp folder next to ``target``; it replaces ``target`` when the block succeeds
    and is deleted when it fails. An existing ``target`` is replaced only if it is an empty folder or
    ``owned(target)`` says it is an earlier ``what`` (so ``--out .`` or ``--out <a model>`` for a bundle
    refuses instead of deleting what is there)."""
    target = Path(target)
    check_replaceable(target, owned, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp"))
    try:
        with _full_disk_is_one_line(target):
            yield tmp
        _as_created(tmp)
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``: yields True while held; False at once when busy and not ``wait``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class OutputBusy(Ptv2Error):
    """Another live process is writing the same output folder."""


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold ``.<out>.lock`` (next to ``out``) while writing ``out``: a second writer is refused at once with
    the holder's pid, host and command; a lock left by a killed process is free again (flock dies with it).
    Temp folders a killed writer left inside ``out`` are removed."""
    import socket
    import sys
    import time

    out = Path(out)
    lock = out.parent / f".{out.name}.lock"
    check_writable(lock.parent)  # the first write next to ``out``: /proc or another user's folder is one line
    with file_lock(lock, wait=False) as mine:
        if not mine:
            holder = lock.read_text(encoding="utf-8", errors="replace").strip() or "another process"
            raise OutputBusy(f"{out} is being written by {holder}; wait for it to finish or pass another --out")
        lock.write_text(f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:200]}) since "
                        f"{time.strftime('%H:%M:%S')}", encoding="utf-8")
        for stale in out.glob(".*.tmp*") if out.is_dir() else []:
            shutil.rmtree(stale, ignore_errors=True)
        try:
            yield
        finally:
            lock.write_text("")
