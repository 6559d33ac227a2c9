"""The project's errors: one base class, a subclass per kind of trouble a user can fix.

The CLI prints any `GraftError` as one `error: …` line with the exit code its class carries; the
pages show it through `pages.common.show_error`. Anything else is a bug and keeps its traceback.
Warnings go through `logging` (logger `graft`), never `print`.
"""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("graft")


class GraftError(Exception):
    """Something the user can act on; the message says what and where."""

    exit_code = 2


class BadInput(GraftError, ValueError):
    """An argument, file or folder that cannot be used as given."""


class NotFound(GraftError, KeyError):
    """A run, file or folder that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BadCheckpoint(GraftError, ValueError):
    """A checkpoint or model card that cannot be used (torn, foreign, or for another model)."""


class Busy(GraftError, RuntimeError):
    """A training run is already going on in this runs folder."""

    exit_code = 3


class WeightsNotFound(GraftError, RuntimeError):
    """Pretrained weights are not on this machine; the message says which file to put where."""


class DiskFull(GraftError, OSError):
    """A file could not be written for lack of space (or over a file-size limit); the previous
    version of the file is kept."""


class SampleError(GraftError, RuntimeError):
    """A sample dataset could not be fetched from the package registries."""


def setup_logging(level: int = logging.INFO) -> None:
    """Messages of the `graft` logger to stdout as plain lines (`warning: …` for warnings)."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Plain())
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"
