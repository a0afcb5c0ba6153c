"""Notes for the user: facts worth knowing that are not errors (a skipped folder, a cache
file recomputed, a retired language code read through its successor).

Core code calls :func:`note` (or :func:`note_once`); the ``mu`` CLI prints each note to
standard error as ``Note: ...``. Python callers see them through the standard ``logging``
logger ``merginguriel`` (level WARNING), so nothing is printed behind their back.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("merginguriel")
_said: set[str] = set()


def note(message: str) -> None:
    """Tell the user ``message`` (one line)."""
    logger.warning(message)


def note_once(message: str, key: str | None = None) -> None:
    """:func:`note`, but only the first time in this process for ``key`` (default: the message)."""
    key = message if key is None else key
    if key not in _said:
        _said.add(key)
        note(message)
