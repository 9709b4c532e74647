"""The `ucfpipe` console entry: the Ctrl-C / SIGTERM and quiet-start guard, the command group, and errors turned
into exit statuses (core.errors lists them). The commands themselves live in ucfpipe.commands, by group."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

from ucfpipe.core import interrupts, quiet

if __name__ == "__main__" or Path(sys.argv[0]).name == "ucfpipe":
    # This process is the ucfpipe command: a Ctrl-C during the imports below is noted, and `_Main.main`
    # (which installs the raising handler) reports it; TensorFlow's start-up lines are filtered out.
    interrupts.record_only()
    quiet.install()

import click  # noqa: E402

# TensorFlow's C++ logging below errors (other backends ignore this variable); what it prints before its
# logging starts is filtered by `quiet`.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ucfpipe import __version__  # noqa: E402
from ucfpipe.commands import bench, data, serving, stages, tune  # noqa: E402
from ucfpipe.commands.options import RERUN, interrupted  # noqa: E402
from ucfpipe.core.errors import EXIT_INTERRUPTED  # noqa: E402


class _Main(click.Group):
    """The group with Ctrl-C handled end to end: click alone prints "Aborted!" and exits 1 for an interrupt
    outside a command, and a KeyboardInterrupt swallowed by a gc callback would let a run go on. Commands are
    listed in pipeline order, not alphabetically."""

    def list_commands(self, ctx):
        return [name for name, command in self.commands.items() if not command.hidden]

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        previous = interrupts.install()
        try:
            if not standalone_mode:
                return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            try:
                interrupts.check()  # pressed while this module imported
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                interrupts.check()
            except (KeyboardInterrupt, click.exceptions.Abort):
                interrupts.ignore()
                interrupts.forget_escaped()
                interrupted(RERUN).show()
                sys.exit(interrupts.exit_status())
            except click.ClickException as err:
                if err.exit_code == EXIT_INTERRUPTED:
                    # Stages say "interrupted" with 130; SIGTERM took the same way and ends with 143.
                    interrupts.ignore()
                    interrupts.forget_escaped()
                    err.exit_code = interrupts.exit_status()
                err.show()
                sys.exit(err.exit_code)
            sys.exit(result if isinstance(result, int) else 0)
        finally:
            interrupts.restore(previous)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ucfpipe")
def main():
    """Videos -> backbone features per frame (stage one, cached) -> LSTM, GRU or Transformer (stage two) -> predict,
    live, export. Commands in pipeline order; `ucfpipe COMMAND --help` for each."""


for command in (data.synth, data.splits, data.check, serving.inspect, stages.extract, data.merge, stages.finetune, stages.train,
                tune.tune, stages.eval_command, stages.report, stages.compare, serving.predict, serving.live, serving.export,
                bench.bench):
    main.add_command(command)
for name, command in bench.bench.commands.items():  # their names before `bench` became a group
    alias = copy.copy(command)
    alias.hidden = True
    main.add_command(alias, f"bench-{name}")


if __name__ == "__main__":
    main()
