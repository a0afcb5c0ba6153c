"""The small exception hierarchy of MergingUriel.

Every error a user can cause derives from :class:`MergingUrielError`. Its message is one
line that names the bad value and what is allowed; the CLI prints it as ``Error: ...``
without a traceback and exits non-zero.
"""

from __future__ import annotations


class MergingUrielError(Exception):
    """Base class: a user-facing error with a one-line message."""


class ConfigError(MergingUrielError):
    """A bad option, parameter or combination of options."""


class LanguageError(ConfigError):
    """An unknown language code, or a language without the data asked for."""


class PluginError(MergingUrielError):
    """A plugin that cannot be loaded, conflicts with another, or is not installed."""


class ModelError(MergingUrielError):
    """A model folder, registry or hub id that cannot be used."""


class TensorFileError(ModelError):
    """A safetensors file that is missing, truncated or inconsistent with its siblings."""


class OutputError(MergingUrielError):
    """An output that cannot be written or placed: busy, appeared meanwhile, or no space."""


def first_line(error: BaseException | str, default: str | None = None) -> str:
    """The first line of an error's message, for a one-line report of an error raised by
    another library (whose messages may run over many lines).

    Leading blank lines and spaces are skipped. An empty message gives ``default``, or
    without one the exception's class name (``""`` for an empty string).
    """
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    if default is not None:
        return default
    return type(error).__name__ if isinstance(error, BaseException) else ""
