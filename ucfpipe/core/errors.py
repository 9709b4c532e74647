"""The one error type the library raises for problems a user can fix, and the one set of exit statuses.

Library code raises `UcfpipeError` with a one-line message that says what was wrong and how to fix it;
only the CLI turns it into an exit status, so the library stays usable from Python without `sys.exit`.
"""

# The documented exit statuses (docs/reliability.md), one place for all commands.
EXIT_OK = 0
EXIT_USAGE = 2  # bad input or settings, a full disk: as click does for usage errors
EXIT_INCOMPLETE = 3  # the work ran, but not all of it holds: clips that could not be read, a damaged cache, a claim not met
EXIT_SOURCE_LOST = 4  # live: the camera or stream dropped or stalled
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM (timeout, docker stop, systemd): 128 + SIGTERM


class UcfpipeError(Exception):
    """A user-facing error: bad input, a mismatched cache, a missing file. Message is one actionable line."""

    exit_code = EXIT_USAGE


class Interrupted(UcfpipeError):
    """A run stopped by Ctrl-C or SIGTERM at a safe point, its message saying what was kept and what a rerun does.
    The CLI reports 143 instead of 130 when SIGTERM stopped it (core.interrupts.exit_status)."""

    exit_code = EXIT_INTERRUPTED
