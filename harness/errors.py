"""The one exception type for bad user input.

A `HarnessError` is printed by the CLI as a single line and exits with code 2. Anything else
that escapes is a bug and keeps its traceback.
"""


class HarnessError(Exception):
    """Bad input (a file, a field, a flag): one clear line for the user, exit code 2."""

    exit_code = 2
