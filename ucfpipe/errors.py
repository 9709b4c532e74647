"""The one error type the library raises for problems a user can fix.

Library code raises `UcfpipeError` with a one-line message that says what was wrong and how to fix it;
only the CLI turns it into an exit status, so the library stays usable from Python without `sys.exit`.
"""


class UcfpipeError(Exception):
    """A user-facing error: bad input, a mismatched cache, a missing file. Message is one actionable line."""

    exit_code = 2
