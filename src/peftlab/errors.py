"""The exception types whose message is shown to the user as a single line, and the other ways a command
ends early: SIGTERM (like Ctrl-C) and a full disk."""

import errno
import signal
import threading
from contextlib import contextmanager


class UserError(Exception):
    """Bad input or environment: the message says what is wrong and what to do."""


class Unsupported(UserError):
    """A method that cannot apply to this model (its structure lacks what the method adapts): a comparison
    records it as 'unsupported' with this reason and runs the other methods."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a scheduler's time limit): handled like Ctrl-C, finished results kept."""


@contextmanager
def sigterm_as_interrupt():
    """Within: SIGTERM raises Terminated (in the main thread only; signal handlers cannot be set elsewhere)."""

    def terminate(signum, frame):
        raise Terminated

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def disk_full(e: BaseException | None) -> bool:
    """Whether e (or what caused it) is a full disk: OSError ENOSPC/EDQUOT, or a library's own error saying so."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_error(where) -> UserError:
    return UserError(
        f"cannot write {where}: the disk is full; free space or pass another --out, then rerun the same "
        "command: finished runs are kept and skipped"
    )
