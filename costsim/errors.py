"""The one exception type for user mistakes: the CLI prints its message on one line, exit code 2."""

from __future__ import annotations


class CostsimError(Exception):
    """A user-facing error: bad input file, unknown name, infeasible configuration.

    The message is a single line naming the file and/or field and what was expected.
    """


class FieldError(CostsimError):
    """A value the engine cannot use, in the engine's own terms: the ``field`` of a scenario or
    deployment (``tp``, ``kv_format``, ``tpot_slo_s``, ...), the ``value`` given and the
    ``reason``. ``str()`` reads ``field=value: reason``; the CLI names its flag instead
    (``--tp 3: reason``), so Python users and CLI users read the same rule.
    """

    def __init__(self, field: str, value, reason: str):
        self.field, self.value, self.reason = field, value, reason
        super().__init__(f"{field}={value}: {reason}")


class CostsimWarning(UserWarning):
    """Something the user should know that does not stop the command (an HF config read as
    another model_type, ...). The CLI prints it as ``costsim: warning: ...`` on stderr."""
