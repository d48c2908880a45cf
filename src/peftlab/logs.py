"""peftlab's messages go through Python's logging, under the logger 'peftlab': progress lines at INFO,
warnings (class coverage, unreadable images, a model without an image processor, a count that differs from
its formula, a tracker that failed) at WARNING. A library user routes them like any library's
(logging.getLogger("peftlab")); without any configuration Python prints the warnings to stderr. The command
line installs one handler that prints to stdout, at the level --log-level gives."""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("peftlab")
LEVELS = ("debug", "info", "warning", "error")


def _main_process() -> bool:
    """torchrun and accelerate launch set RANK: only the first process speaks."""
    return os.environ.get("RANK", "0") == "0"


def warning(message: str) -> None:
    if _main_process():
        logger.warning(message.removeprefix("WARNING "))


def info(message: str) -> None:
    if _main_process():
        logger.info(message)


class _Stdout(logging.StreamHandler):
    """Writes to whatever sys.stdout is at the time (a notebook's, pytest's capture)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname} {text}"
        elif record.levelno < logging.INFO:
            text = f"DEBUG {record.name}: {text}"
        return text


_HANDLER = "peftlab-cli"


def configure(level: str = "info") -> None:
    """The command line's logging: peftlab's records at `level` and above to stdout, one line each (warnings
    prefixed WARNING); at debug also the libraries' own records (transformers, accelerate, peft, ...)."""
    if level not in LEVELS:
        raise ValueError(level)
    for h in [h for h in logger.handlers if h.get_name() == _HANDLER]:
        logger.removeHandler(h)
    handler = _Stdout()
    handler.set_name(_HANDLER)
    handler.setFormatter(_Format())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # printed once, by this handler
    if level == "debug":
        logging.basicConfig(level=logging.DEBUG, format="DEBUG %(name)s: %(message)s")


def add_log_level(parser, default) -> None:
    """--log-level on an argparse parser (the command line's every command)."""
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default=default,
        help="info: progress lines and warnings (default); warning: warnings only; error: nothing but errors; "
        "debug: also the libraries' own logs",
    )
