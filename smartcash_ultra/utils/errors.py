"""The errors whose cause the plugin knows: each message names the file and the way out.

:class:`SmartCashError` is their base. The ``yolo`` and ``smartcash-ultra`` commands print such an error as one message
and exit non-zero, without a traceback (``_startup.py`` for ``yolo``, ``tools/cli.py``); Python callers get the
exception. Each one also derives from the built-in type a caller would catch for it (``ValueError``,
``PermissionError``, ...), so ``except ValueError`` keeps working. An error becomes "known" by deriving from
:class:`SmartCashError`, and only so: an unexpected failure keeps its traceback.
"""

from __future__ import annotations


class SmartCashError(Exception):
    """An error the plugin raises on purpose, with a message a user can act on."""


class CheckpointError(SmartCashError, ValueError):
    """A checkpoint that cannot be resumed or extended as asked.

    Unreadable, stripped, finished, outside a run's ``weights/``, or asked to continue on other classes.
    """


class UnreadableCheckpoint(CheckpointError, TypeError):
    """A file given as a checkpoint that cannot be read (empty, truncated, not a checkpoint).

    A ``TypeError`` too, as Ultralytics raises for such a file, so callers that catch its error still do.
    """


class ArgumentError(SmartCashError, ValueError):
    """An argument the plugin refuses before anything is made, saying what to use instead."""


class DataYamlError(SmartCashError, RuntimeError):
    """A data YAML Ultralytics' dataset check refuses (a path that does not exist, YAML it cannot parse, no ``val``).

    A ``RuntimeError``, as Ultralytics' trainer raises for it; its message already names the YAML and the cause.
    """


class RunFolderError(SmartCashError, PermissionError):
    """A run folder a training cannot write into: read-only."""


class RunFolderBusy(SmartCashError, RuntimeError):
    """A run folder another live training holds (its ``train.lock``)."""


def summary(exc: BaseException) -> str:
    """Return ``exc``'s message with its chained causes summarised after it (type and first line of each)."""
    parts, seen = [str(exc).strip()], {id(exc)}
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        parts.append(f"caused by {type(cause).__name__}" + (f": {first}" if first else ""))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return "; ".join(parts)
