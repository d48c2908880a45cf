"""Who writes where in an output folder, so that two processes on one folder (two commands, a SLURM array,
Ray tasks) never delete, overwrite or redo each other's runs.

- Each run folder (and each search, and the folder's shared files) has an advisory lock: fcntl.flock on a
  file in OUT/.peftlab/, held while a process writes there. The kernel releases it when the process ends,
  kill -9 included, so a lock never outlives its holder; the holder writes its pid, host and start time into
  the file so that others can name it.
- A run folder carries peftlab's marker of an unfinished run (UNFINISHED) from the moment a run starts until
  its result is final. Only a folder with that marker, an empty one, or one whose result.json records an
  unfinished run (failed, oom) is ever removed; anything else in the way is a one-line error.
- Whether a run is finished is read again, under its lock, just before it would start.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..errors import UserError
from ..results import FINAL, Result, load_result

LOCKS = ".peftlab"  # OUT/.peftlab/<name>.lock: one per run folder, per search, and 'folder' for the shared files
UNFINISHED = ".peftlab-unfinished"  # in a run folder from its start until its result.json is final
FOLDER = "folder"  # the lock of config.yaml, summary.md and the report
PRESENT = "present"  # held shared by every process working in the folder


class Lock:
    """An advisory, exclusive lock on OUT/.peftlab/<name>.lock (fcntl.flock: per open file, released by the
    kernel when its process ends). The file records the holder: pid, host, since."""

    def __init__(self, out: str | Path, name: str):
        self.path = Path(out) / LOCKS / f"{name}.lock"
        self.fd: int | None = None

    def acquire(self, wait: bool = True, shared: bool = False) -> bool:
        """Take the lock (waiting for it when wait); False when another process holds it and not wait.
        shared: one of many holders (the 'present' lock of every process working in the folder)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(f"cannot create the lock file {self.path} ({e.strerror}); pass a writable --out") from e
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:  # Ctrl-C while waiting
            os.close(fd)
            raise
        self.fd = fd
        if shared:
            return True  # many holders: none of them is named
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_holder()) + "\n").encode(), 0)
        except OSError:
            pass  # the holder's name is for messages only; the lock itself is held
        return True

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)  # closing the only descriptor releases the flock

    def alone(self) -> bool:
        """Holding this lock shared: whether no other process holds it. Asked under the folder lock, so that two
        processes never try at once (a failed conversion to exclusive drops the shared lock: taken again)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            return False
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        return True

    def holder(self) -> str:
        """Who holds the lock, for messages: 'process 123 on host (since ...)'."""
        try:
            h = json.loads(self.path.read_text())
            return f"process {h['pid']} on {h['host']} (since {h['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def __enter__(self) -> Lock:
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def finished(run_dir: Path, header: Result) -> Result | None:
    """The run's finished result (ok, diverged) when run_dir holds one with the same configuration; None when
    the run is still to do (no folder, an empty one, peftlab's marker of an unfinished run, or a failed/oom
    result). A different configuration, a damaged result.json or a folder peftlab did not make is an error:
    nothing is redone over it."""
    path = run_dir / "result.json"
    if path.is_file():
        try:
            old = load_result(path)
        except UserError as e:
            if (run_dir / UNFINISHED).exists():
                return None  # peftlab's own unfinished run
            raise UserError(
                f"{path} is not a readable peftlab result; peftlab does not delete it: move '{run_dir}' away "
                "(or delete it) to redo that run, or pass another --out"
            ) from e
        if old.get("config") != json.loads(json.dumps(header["config"])):
            raise UserError(
                f"'{run_dir}' holds a run with a different configuration; pass another --out "
                "(results are never overwritten)"
            )
        return old if old.get("status") in FINAL else None
    if run_dir.is_symlink():
        raise UserError(_link_message(run_dir))
    if run_dir.exists() and not _removable(run_dir):
        shown = ", ".join(sorted(p.name for p in run_dir.iterdir())[:3]) if run_dir.is_dir() else "a file"
        raise UserError(
            f"'{run_dir}' is in the way: it has no result.json and no mark of an unfinished peftlab run "
            f"(it holds {shown}); peftlab does not delete it: move it away or pass another --out"
        )
    return None


def _removable(run_dir: Path) -> bool:
    """peftlab's own leftovers: its marker, an empty folder, or a result.json recording an unfinished run."""
    if run_dir.is_symlink() or not run_dir.is_dir():
        return False
    if (run_dir / UNFINISHED).exists() or not any(run_dir.iterdir()):
        return True
    try:
        return load_result(run_dir / "result.json").get("status") not in FINAL
    except UserError:
        return False


def start(run_dir: Path, run: str) -> None:
    """Clear an unfinished run's leftovers (only peftlab's own) and mark the folder as an unfinished run."""
    if run_dir.is_symlink():
        raise UserError(_link_message(run_dir))
    if run_dir.exists():
        if not _removable(run_dir):  # finished() said so before; a file put there since is not deleted
            raise UserError(f"'{run_dir}' is in the way and not peftlab's; move it away or pass another --out")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True)
        mark = {
            "run": run,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (run_dir / UNFINISHED).write_text(json.dumps(mark) + "\n")
    except OSError as e:
        why = "the disk is full" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise UserError(
            f"cannot create run folder '{run_dir}': {why}; free space or pass another --out, then rerun the "
            "same command: finished runs are kept and skipped"
        ) from e


def _link_message(run_dir: Path) -> str:
    return (
        f"run folder '{run_dir}' is a link (to '{os.readlink(run_dir)}') without a finished result; peftlab "
        "does not delete or write through links: remove the link or pass another --out"
    )


def done(run_dir: Path) -> None:
    """The run's result.json is final: the folder no longer carries the unfinished mark."""
    (run_dir / UNFINISHED).unlink(missing_ok=True)


def claim(out: Path, values: dict, command: str, present: Lock) -> None:
    """Write the folder's config.yaml before any run starts, or check this command against the one there: a
    configuration that differs from it never replaces it while the folder holds runs or another process
    works in it (one line naming the difference); one that names more runs extends it; one that names
    fewer leaves it. present: this process's shared 'present' lock on the folder."""
    from ..config import as_yaml_values, config_yaml, conflicts, covers, read_file
    from .worker import _write

    path = out / "config.yaml"
    with Lock(out, FOLDER):
        new = as_yaml_values(values)
        if path.exists():
            old = read_file(str(path))
            differ = conflicts(old, new)
            if differ and (not present.alone() or _holds_runs(out)):
                raise UserError(
                    f"'{out}' holds runs of a different configuration ({differ[0]}; see {path}); pass another "
                    "--out (a folder holds one configuration; results are never overwritten)"
                )
            if not differ and covers(old, new):
                return  # it names every run of this command already
            if not differ and not covers(new, old):
                raise UserError(
                    f"'{out}' holds runs this command does not name (see {path}) and this command adds others; "
                    "name them all (e.g. every --methods and --seeds of both) or pass another --out"
                )
        _write(path, config_yaml(values, command))


def _holds_runs(out: Path) -> bool:
    """Whether any folder in out holds a run's result. A folder with only peftlab's mark of an unfinished run
    holds nothing to keep (a command that stopped on bad input, or a process that died: no live process is
    in the folder), and would be redone from scratch anyway."""
    return any((d / "result.json").exists() for d in out.iterdir() if d.is_dir())
