"""Writing outputs so that nothing a user has is lost, and nothing half-written looks finished.

Every file and folder MergingUriel writes goes through this module:

- :func:`staged_file` / :func:`atomic_file` / :func:`write_text_atomically` (and
  :func:`write_bytes_atomically`, :func:`write_json_atomically`): one file, written under a
  temporary name in the same folder, flushed to disk (fsync), then renamed into place. Without
  ``replace=True`` a file that exists *at the moment of the rename* is never replaced: the
  new result is kept beside it under a name the error gives.
- :func:`staged_folder`: a whole output folder (a merged or fine-tuned model). The output
  path is locked for the whole run (a second run to it fails at once, naming the first
  one's process), the folder is built under a temporary name with the user's umask, every
  file in it is fsync'd, and it is placed atomically against whatever is there at that
  moment: without ``overwrite`` an output that appeared meanwhile is left alone and the
  result kept under a name the error gives; with ``overwrite`` only the folder that existed
  when the run started is replaced, by one atomic exchange where the system has one.
  Leftovers of killed runs (temporary folders, an old output moved aside) are cleaned or
  restored by the next run to the same output, which says what it did.
- :func:`check_output_path`: an output never is, contains or lies inside an input;
  :func:`check_results_folder`: nor replaces result files unasked.

Disk-full and file-size-limit errors become one-line :class:`OutputError` messages that say
what was being written and how much space it needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from merginguriel_core.errors import ConfigError, OutputError
from merginguriel_core.notes import note

#: errno values that mean "the device (or a limit) has no room for what is being written".
SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# ------------------------------------------------------------------------------ sizes
def format_bytes(count: float) -> str:
    """``1.1 GB``, ``340.0 MB``, ``12 KB``: a byte count as people read it (powers of 1000)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} B"


def tree_bytes(path: Path) -> int:
    """Total size of the files under ``path`` (a file's own size for a file)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


# ---------------------------------------------------------------------- durability
def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` and the folders themselves, so that a power loss
    after the final rename cannot leave a short file behind a complete name."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        fsync_dir(Path(root))


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything in it the modes a new file and folder get from the
    user's umask: libraries that write privately (safetensors writes 0600) or
    ``tempfile.mkdtemp`` (0700) must not make a user's output unreadable to their group."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask, follow_symlinks=False)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & 0o100
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


# -------------------------------------------------------------------------- renames
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _load_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def _rename_flags(source: Path, destination: Path, flags: int) -> bool:
    """``renameat2(source, destination, flags)``; False where the system or file system lacks it."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(destination), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(source), None, str(destination))


def rename_no_replace(source: Path, destination: Path) -> None:
    """Rename ``source`` to ``destination``, failing with :class:`FileExistsError` if anything
    is at ``destination`` at that moment (atomically on Linux; a check-then-rename elsewhere)."""
    if _rename_flags(source, destination, _RENAME_NOREPLACE):
        return
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "File exists", str(destination))
    os.rename(source, destination)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the system cannot (the caller falls back)."""
    return _rename_flags(first, second, _RENAME_EXCHANGE)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block is done, then deliver them.

    Used around the few renames that place a finished output, so an interrupt cannot land
    between them. (SIGKILL cannot be held; the next run repairs what it leaves.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[number] = signal.getsignal(number)
        signal.signal(number, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            signal.raise_signal(received[0])


# ---------------------------------------------------------------------------- files
def _kept_name(path: Path) -> Path:
    """A fresh name beside ``path`` for a result that could not be put at ``path``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.new-{stamp}")
    counter = 1
    while os.path.lexists(candidate):
        counter += 1
        candidate = path.with_name(f"{path.name}.new-{stamp}-{counter}")
    return candidate


def _appeared(path: Path, kept: Path, what: str) -> OutputError:
    return OutputError(
        f"{path} appeared while this run was writing it and was left as it is; the new {what} is at {kept}"
    )


def make_parents(path: Path) -> list[Path]:
    """Create the missing folders above ``path`` (with the user's umask); return those made,
    outermost first, so a failed run can remove them again (:func:`remove_made`)."""
    path = Path(path)
    missing = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()][::-1]
    made = []
    for folder in missing:
        try:
            folder.mkdir()
        except FileExistsError:
            if not folder.is_dir():
                remove_made(made)
                raise ConfigError(f"cannot make the folder {folder} for {path}: a file is in the way") from None
            continue
        except NotADirectoryError:
            remove_made(made)
            raise ConfigError(f"cannot make the folder {folder} for {path}: a file is in the way") from None
        except PermissionError:
            remove_made(made)
            raise ConfigError(f"cannot make the folder {folder} for {path}: permission denied") from None
        made.append(folder)
    if not path.parent.is_dir():
        raise ConfigError(f"the folder {path.parent} for {path.name} is not a folder")
    return made


def remove_made(made: list[Path]) -> None:
    """Remove the folders :func:`make_parents` made, innermost first, where still empty."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def staged_file(path: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (e.g.
    ``safetensors.save_file``); on success fsync it and rename it to ``path``. With
    ``replace=False`` a file that exists at that moment is kept and the new one is left under
    a name the :class:`OutputError` gives. On failure nothing is left behind.
    """
    path = Path(path)
    made = make_parents(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    placed = False
    try:
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if replace:
            os.replace(temporary, path)
        else:
            try:
                rename_no_replace(temporary, path)
            except FileExistsError:
                kept = _kept_name(path)
                rename_no_replace(temporary, kept)
                raise _appeared(path, kept, "file") from None
        fsync_dir(path.parent)
        placed = True
    except OSError as exc:
        if exc.errno in SPACE_ERRORS:
            raise space_error(exc, path, None) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        if not placed:
            remove_made(made)


def cache_folder(name: str) -> Path:
    """MergingUriel's cache folder ``name`` (``logits``, ``statistics``, ``representations``):
    under ``$XDG_CACHE_HOME/merginguriel``, default ``~/.cache/merginguriel``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "merginguriel" / name


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w", *, replace: bool = True, encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a file for writing that appears at ``path`` only when complete and on disk
    (:func:`staged_file`). It gets the usual permissions (the user's umask)."""
    with staged_file(path, replace=replace) as temporary:
        binary = "b" in mode
        with open(temporary, mode, **({} if binary else {"encoding": encoding, "newline": ""})) as handle:
            yield handle


def write_text_atomically(path: Path, text: str, *, replace: bool = True) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path, "w", replace=replace) as handle:
        handle.write(text)


def write_bytes_atomically(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path, "wb", replace=replace) as handle:
        handle.write(data)


def write_json_atomically(path: Path, data: Any, *, replace: bool = True) -> None:
    """Write ``data`` as JSON (indented, newline-terminated) through :func:`atomic_file`."""
    write_text_atomically(path, json.dumps(data, indent=2) + "\n", replace=replace)


def space_error(exc: OSError, target: Path, needed: int | None, written: int | None = None) -> OutputError:
    """A one-line :class:`OutputError` for a write that ran out of space or hit a size limit."""
    where = exc.filename or target
    need = f"; it needs {format_bytes(needed)} in all" if needed else ""
    done = f" ({format_bytes(written)} written)" if written is not None else ""
    if exc.errno == errno.EFBIG:
        return OutputError(
            f"file too large while writing {where}{done}: the file-size limit (ulimit -f) is below what it needs"
            f"{need}; raise the limit, or write smaller shards (--max-shard-size)"
        )
    try:
        free = f", {format_bytes(shutil.disk_usage(Path(target).parent).free)} is free there now"
    except OSError:
        free = ""
    quota = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on the device"
    return OutputError(f"{quota} while writing {where}{done}{need}{free}; free some space or choose another output")


# -------------------------------------------------------------------------- checks
def check_output_path(output: Path, inputs: Iterable[Path | str | None], option: str = "--output") -> None:
    """Refuse an ``output`` that is, contains or lies inside one of the ``inputs`` (model
    folders, data, registries), or that is the current folder or one above it."""
    output = Path(output)
    if str(output).strip() in ("", ".") or not output.name or output.name in (".", ".."):
        raise ConfigError(f"{option} {str(output)!r} must name a new folder (or file), not the current or a parent folder")
    if output.is_symlink():
        raise ConfigError(f"{option} {output} is a symbolic link; give a real path")
    resolved = output.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise ConfigError(f"{option} {output} is the current folder or one above it; choose a new folder")
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        model = Path(item).resolve()
        if resolved == model or model in resolved.parents or resolved in model.parents:
            raise ConfigError(
                f"{option} {output} would overwrite, hold or sit inside the input {item}; choose another path"
            )


def check_results_folder(output: Path, names: Iterable[str], overwrite: bool,
                         inputs: Iterable[Path | str | None] = ()) -> None:
    """Refuse an ``--output`` folder of result files that already holds one of the files
    ``names`` (unless ``overwrite``), is not a folder, or is, holds or lies inside one of the
    ``inputs`` (:func:`check_output_path`). Missing folders above it are made when it is
    written (:class:`OutputLock`)."""
    check_output_path(output, inputs)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} exists and is not a folder")
    existing = [name for name in names if (output / name).exists()]
    if existing and not overwrite:
        raise ConfigError(f"{output / existing[0]} already exists; pass --overwrite to replace it")


# ------------------------------------------------------------------- output folders
def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """An exclusive lock on an output path for the whole run (``.NAME.lock`` beside it).

    The lock is an ``flock`` on that file, so the system releases it when the process dies,
    even by SIGKILL. The file holds the owner's process id and command, for the message a
    second run gets.
    """

    def __init__(self, output: Path):
        self.output = Path(output)
        self.path = self.output.with_name(f".{self.output.name}.lock")
        self._descriptor: int | None = None
        self._made: list[Path] = []

    def __enter__(self) -> OutputLock:
        self._made = make_parents(self.output)
        try:
            return self._acquire()
        except BaseException:
            remove_made(self._made)
            raise

    def _acquire(self) -> OutputLock:
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = self._owner(descriptor)
                os.close(descriptor)
                raise OutputError(
                    f"{self.output} is being written by another run ({owner}); wait for it to finish or choose "
                    f"another output"
                ) from None
            # The previous owner may have removed the file between our open and our lock.
            try:
                same = os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(descriptor)
        os.ftruncate(descriptor, 0)
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        os.write(descriptor, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')} {command}\n".encode())
        self._descriptor = descriptor
        return self

    def _owner(self, descriptor: int) -> str:
        try:
            text = os.pread(descriptor, 400, 0).decode(errors="replace").strip()
        except OSError:
            text = ""
        pid, _, rest = text.partition(" ")
        if not pid.isdigit():
            return "a process that has not written its id yet"
        date, _, command = rest.partition(" ")
        clock, _, command = command.partition(" ")
        return f"process {pid}, started {date} {clock}" + (f": {command}" if command else "")

    def __exit__(self, exc_type, *exc_info) -> None:
        if self._descriptor is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._descriptor)
            self._descriptor = None
        if exc_type is not None:  # a failed run leaves no folders it made for its output
            remove_made(self._made)


def _leftovers(output: Path) -> list[tuple[Path, str, int | None]]:
    """Temporary and moved-aside folders that earlier runs left beside ``output``:
    ``(path, 'tmp' or 'old', process id or None)``. Names: ``.NAME.tmp-PID-HEX`` and
    ``.NAME.old-PID-HEX`` (this module), ``.NAME.old-PID`` and ``.NAME.tmp-XXXXXXXX``
    (earlier versions, the latter without a process id)."""
    name = re.escape(output.name)
    patterns = (
        re.compile(rf"^\.{name}\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{{8}}$"),
        re.compile(rf"^\.{name}\.(?P<kind>old)-(?P<pid>\d+)$"),
        re.compile(rf"^\.{name}\.(?P<kind>tmp)-[A-Za-z0-9_]{{8}}$"),
    )
    found = []
    if not output.parent.is_dir():
        return found
    for entry in sorted(output.parent.iterdir()):
        match = next((m for m in (p.match(entry.name) for p in patterns) if m), None)
        if match and entry.is_dir() and not entry.is_symlink():
            pid = match.groupdict().get("pid")
            found.append((entry, match.group("kind"), int(pid) if pid else None))
    return found


def recover(output: Path) -> None:
    """Clean up after killed runs to ``output`` (the caller holds its :class:`OutputLock`).

    - a temporary folder of a dead process is removed (it never was a finished output);
    - a previous output moved aside by a run killed while replacing it is put back when
      nothing is at ``output``, else left where it is and reported;
    - anything of a process that still runs is reported, with its size, and left alone.
    """
    output = Path(output)
    for path, kind, pid in _leftovers(output):
        size = format_bytes(tree_bytes(path))
        alive = pid is not None and _process_alive(pid)
        if kind == "tmp" and pid is not None and not alive:
            shutil.rmtree(path, ignore_errors=True)
            note(f"removed {path} ({size}), the unfinished output of a run (process {pid}) that was killed")
        elif kind == "old" and not alive and not os.path.lexists(output):
            os.rename(path, output)
            fsync_dir(output.parent)
            note(f"restored {output} from {path.name}: a run killed while replacing it had moved it aside")
        elif kind == "old" and not alive:
            note(f"{path} ({size}) holds the output a killed run replaced with {output}; delete it if you "
                 f"do not need it")
        else:
            owner = f"process {pid}, still running" if alive else "an unknown process"
            note(f"{path} ({size}) was left beside {output} by {owner}; delete it if no run is using it")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _make_staging(output: Path) -> Path:
    """A new, empty folder beside ``output``, named after the process, with the umask's mode."""
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(staging, 0o777)  # the umask applies, as for any folder the user makes
    return staging


def _keep_aside(staging: Path, output: Path, what: str) -> OutputError:
    kept = _kept_name(output)
    rename_no_replace(staging, kept)
    fsync_dir(output.parent)
    return _appeared(output, kept, what)


def _place(staging: Path, output: Path, overwrite: bool, original: tuple[int, int] | None, what: str) -> None:
    """Put the finished ``staging`` folder at ``output``, replacing only ``original``."""
    with signals_deferred():
        now = _identity(output)
        if now is None or not overwrite or now != original:
            try:
                rename_no_replace(staging, output)
            except FileExistsError:
                raise _keep_aside(staging, output, what) from None
            fsync_dir(output.parent)
            return
        if exchange(staging, output):  # staging now holds the replaced folder
            fsync_dir(output.parent)
            shutil.rmtree(staging, ignore_errors=True)
            return
        aside = output.with_name(f".{output.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(output, aside)
        try:
            rename_no_replace(staging, output)
        except BaseException:
            os.rename(aside, output)
            raise
        fsync_dir(output.parent)
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(output: Path, *, overwrite: bool = False, what: str = "output",
                  needed_bytes: int | None = None) -> Iterator[Path]:
    """Build an output folder under a temporary name and place it at ``output`` when complete.

    Yields the folder to fill. Holds an :class:`OutputLock` on ``output`` throughout and
    first repairs what killed runs left (:func:`recover`). Refuses an existing ``output``
    unless ``overwrite``; see the module docstring for what happens at placement. On any
    error or interrupt the temporary folder is removed and ``output`` is as it was.
    ``needed_bytes`` (the expected size) goes into a disk-full message.
    """
    output = Path(output)
    with OutputLock(output):  # makes missing folders above it (removed again if the run fails)
        recover(output)
        original = _identity(output)
        if original is not None and not overwrite:
            raise ConfigError(f"{output} already exists; pass --overwrite to replace it")
        if original is not None and not output.is_dir():
            raise ConfigError(f"{output} exists and is not a folder")
        staging = _make_staging(output)
        try:
            yield staging
            apply_umask(staging)
            fsync_tree(staging)
            _place(staging, output, overwrite, original, what)
        except OSError as exc:
            if exc.errno in SPACE_ERRORS:
                where = _final_name(exc.filename, staging, output)
                error = OSError(exc.errno, exc.strerror, str(where) if where else None)
                raise space_error(error, output, getattr(exc, "needed", None) or needed_bytes,
                                  getattr(exc, "written", None)) from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _final_name(name: str | None, staging: Path, output: Path) -> Path | None:
    """Where a file being written in ``staging`` would have been in ``output``."""
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute():
        return output / path
    try:
        return output / path.relative_to(staging)
    except ValueError:
        return path
