"""What every command shares: library errors as one line and an exit status, and the option decorators built
from config.py (each setting's flag, help, type, choices and default live there once, in its dataclass field)."""

from __future__ import annotations

import functools
from dataclasses import fields
from pathlib import Path

import click

from ucfpipe.config import CHOICES, DATASET_HELP, ExtractConfig, described, setting
from ucfpipe.core import interrupts
from ucfpipe.core.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USAGE, UcfpipeError
from ucfpipe.core.destinations import STDOUT


def failure(message: str, exit_code: int) -> click.ClickException:
    """One line on stderr and `exit_code` (core.errors' statuses)."""
    exc = click.ClickException(message)
    exc.exit_code = exit_code
    return exc


RERUN = "interrupted; rerun the same command to continue"  # an interrupt before a stage kept anything of its own


def interrupted(message: str) -> click.ClickException:
    """The one "interrupted" line; cli's group turns its status into 130 (Ctrl-C) or 143 (SIGTERM)."""
    return failure(message, EXIT_INTERRUPTED)


def incomplete(message: str) -> click.ClickException:
    """The one "finished with problems" line: exit status 3 (clips that could not be read, a cache not whole)."""
    return failure(message, EXIT_INCOMPLETE)


def user_errors(command):
    """Library errors and OS errors (missing permissions, full disk) -> one line on stderr, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            result = command(*args, **kwargs)
            interrupts.check()  # Ctrl-C swallowed somewhere (a gc callback) is still an interrupt
            return result
        except KeyboardInterrupt:
            # Before a stage reached a safe point (importing TensorFlow, building the model): nothing of this
            # run was kept that a rerun would not redo or skip.
            raise interrupted(RERUN) from None
        except UcfpipeError as err:
            raise failure(str(err), err.exit_code) from None
        except Exception as err:
            # The interrupt, in another error's clothes (a library caught the KeyboardInterrupt and raised its own,
            # an OSError included): still the interrupt. Click's own ends (a line already made, an exit) go on.
            if interrupts.requested() and not isinstance(err, (click.ClickException, click.exceptions.Exit,
                                                                 click.exceptions.Abort)):
                raise interrupted(RERUN) from None
            if isinstance(err, OSError):
                where = f"{err.filename}: " if err.filename else ""
                raise failure(f"{where}{err.strerror or err}; check the path, its permissions and free disk space",
                              EXIT_USAGE) from None
            raise

    return wrapper


# -- options several commands share, spelled once ----------------------------------------------------------------
def run_option(help: str = "Run (or ensemble) directory made by `ucfpipe train`."):
    return click.option("--run", "run_dir", required=True, type=click.Path(), help=help)


def weights_option():
    return click.option("--weights", type=click.Path(),
                        help="The backbone's weights file, if it moved since extraction (its SHA-256 is checked).")


def top_option(help: str = "Classes to show per video."):
    return click.option("--top", type=int, default=5, show_default=True, help=help)


def json_option(help: str):
    return click.option("--json", "as_json", is_flag=True, help=help)


def json_out_option():
    return click.option("--json-out", type=click.Path(), help="Also write the results as JSON here (- for standard "
                        "output; the table then goes to stderr).")


def stdout_echo(named: str | None):
    """click.echo, or to stderr when the one named output is `-`: standard output then holds that file alone."""
    if named == STDOUT:
        return functools.partial(click.echo, err=True)
    return click.echo


def no_progress_option():
    """--no-progress of every command that shows a progress bar; the command gets `progress`: a bar wanted and
    stderr a terminal."""
    return click.option("--no-progress", "progress", is_flag=True, help="No progress bar (for logs).",
                        callback=lambda ctx, param, off: not off and stderr_is_terminal())


def stderr_is_terminal() -> bool:
    """Whether a progress bar would reach a person (a log file or a pipe gets none)."""
    import sys

    return sys.stderr.isatty()


def config_option(stage: str):
    default = Path("stages") / f"{stage}.toml"
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None,
        help=f"TOML file of {stage} settings (the Makefile passes {default}); flags override it.",
    )


# -- settings: flag, help, type, choices and documented default of each come from config.py ---------------------
def setting_option(cls, name: str, *decls: str, help: str | None = None, **kwargs):
    """The flag of setting `name` of `cls`, as config.py documents it (`config.documented`): its help, type and
    choices, `[default: ...]` from the dataclass (or the default the field says is worked out, as a backbone's
    layer). It defaults to None ("not given"): load_config then keeps a config file's value, so defaults < file <
    flags holds. `help` replaces the documented text where a command gives the setting another meaning (compare's
    --out is a folder of runs); `kwargs` go to click.option.

    A help that names `{choices}` lists them and leaves refusing others to the library, whose message is the same
    for a flag and a config file's key; otherwise click offers them as [a|b|c]."""
    default, hint = setting(cls, name)
    meta = described(cls, name).metadata
    help = meta["help"] if help is None else help
    decls = decls or ((meta["flag"],) if meta.get("flag") else (f"--{name.replace('_', '-')}",))
    shown = meta.get("shown") or _shown_default(default, decls)
    if name in CHOICES and "{choices}" in help:
        help = help.format(choices=", ".join(CHOICES[name]))
        kwargs.setdefault("metavar", "NAME")
    elif name in CHOICES:
        kwargs["type"] = click.Choice(CHOICES[name])
    elif hint is bool:
        kwargs["is_flag"] = True
    elif meta.get("path"):
        kwargs.setdefault("type", click.Path(dir_okay=meta["path"] != "file"))
    else:
        kwargs.setdefault("type", hint)
    return click.option(*decls, name, default=None, help=help + (f"  [default: {shown}]" if shown else ""), **kwargs)


def settings_options(cls, *names: str):
    """The flags of settings `names` of `cls` (all of its settings, in the dataclass' order, when none are named),
    in that order in --help: a setting several commands take is declared once, in config.py."""
    names = names or tuple(f.name for f in fields(cls))

    def decorate(command):
        for name in reversed(names):  # click lists options top-down, decorators apply bottom-up
            command = setting_option(cls, name)(command)
        return command

    return decorate


def _shown_default(value, decls) -> str:
    """The dataclass default as the help shows it; "" (required, or worked out later) shows nothing, and a
    plain flag is off unless given. A --yes/--no pair names its default side."""
    if isinstance(value, bool):
        pair = decls[0].split("/")
        return pair[0 if value else 1].lstrip("-") if len(pair) == 2 else ""
    if isinstance(value, float):
        mantissa, exponent, power = repr(value).partition("e")
        return f"{mantissa}e{int(power)}" if exponent else mantissa  # 1e-5 (not 1e-05), as the TOML files write it
    return str(value)


def dataset_option():
    """--dataset of the commands that read no config file (splits, check): extract's, with its default given directly."""
    return click.option("--dataset", default=ExtractConfig.dataset, show_default=True, metavar="NAME",
                        help=DATASET_HELP.format(choices=", ".join(CHOICES["dataset"])))
