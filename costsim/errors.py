"""The one exception type for user mistakes: the CLI prints its message on one line, exit code 2."""


class CostsimError(Exception):
    """A user-facing error: bad input file, unknown name, infeasible configuration.

    The message is a single line naming the file and/or field and what was expected.
    """
