"""`ucfpipe bench extract|model|train|long`: measurements side by side in one run (the machine is shared and
noisy, so nothing is compared across runs). The old names bench-extract, bench-model, bench-train, bench-long
(and `bench` alone for bench-extract) stay as hidden aliases."""

from __future__ import annotations

from pathlib import Path

import click

from ucfpipe.bench.extract import MODES
from ucfpipe.commands.options import config_option, json_out_option, settings_options, stdout_echo, user_errors
from ucfpipe.config import CHOICES, PRECISIONS, ExtractConfig, TrainConfig, load_config
from ucfpipe.core.comma_list import comma_list
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.destinations import output
from ucfpipe.core.files import write_json
from ucfpipe.models.backbones import BACKBONES


class _BenchGroup(click.Group):
    """`ucfpipe bench --clips 16,32` is the old spelling of `ucfpipe bench extract --clips 16,32`: a group whose
    first word is no command of its own runs extract."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["extract", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_BenchGroup)
def bench():
    """Benchmarks measured side by side in one run: extract (the pipeline's modes), model (backbones by
    precision and batch size), train (an epoch of stage two), long (windowed prediction of long videos)."""


@bench.command("extract")
@click.option("--clips", "clip_counts", default="16,32", show_default=True, help="Clip counts (multiples of 8); all modes run on the largest.")
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--size", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--weights", default="none", show_default=True, help="none, imagenet or a weights file.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=ExtractConfig.precision, show_default=True)
@click.option("--engine", "engine_names", default="local", show_default=True,
              help="Comma-separated engines whose extraction runs side by side: local, ray (docs/ray.md).")
@click.option("--repeats", type=int, default=3, show_default=True,
              help="Interleaved rounds, each mode once per round in its own process: min/median/max per mode.")
@click.option("--modes", "mode_names", default=",".join(MODES), show_default=True,
              help="Comma-separated modes to measure; ucfpipe's extraction (by each --engine) always runs, and each "
                   "ratio is given where the modes it needs ran.")
@click.option("--json", "json_file", type=click.Path(), help="Also write every round, the settings, versions and CPU as "
              "JSON here (- for standard output; the table then goes to stderr).")
@click.option("--json-out", type=click.Path(), hidden=True, help="The old name of --json.")
@user_errors
def bench_extract(clip_counts, frames, size, batch_size, workers, weights, precision, engine_names, repeats, mode_names,
                  json_file, json_out):
    """Stage one side by side: model-only, ucfpipe's extraction, the host alone (a zero model), a naive
    tutorial-style peer, decoding alone (also `ucfpipe bench`)."""
    from ucfpipe.bench import extract as bench

    flag, json_out = ("--json", json_file) if json_file is not None else ("--json-out", json_out)
    echo = _echo(json_out, flag)
    counts = comma_list(clip_counts, "--clips", int, positive=True)
    engines = comma_list(engine_names, "--engine", choices=CHOICES["engine"], repeats="drop")
    modes = comma_list(mode_names, "--modes", choices=MODES, repeats="drop")
    if "ray" in engines:
        from ucfpipe.stage_one.ray_cluster import import_ray

        import_ray()  # not installed: one line naming the extra, before any measurement
    results = bench.run(counts, frames, size, batch_size, workers, weights, precision, log=echo, engines=engines,
                        repeats=repeats, modes=modes)
    echo(bench.format_table(results))
    if json_out:
        write_json(Path(json_out), results)


@bench.command("model")
@click.option("--batch-sizes", default="32,64", show_default=True, help="Comma-separated frames per model call.")
@click.option("--precisions", default="float32,bfloat16", show_default=True, help=f"Compute dtypes: {', '.join(PRECISIONS)}.")
@click.option("--backbone", "backbone_names", default=ExtractConfig.backbone, show_default=True,
              help=f"Comma-separated backbones timed side by side ({', '.join(BACKBONES)}) or all.")
@click.option("--size", type=int, help="Frame size.  [default: each backbone's native size]")
@click.option("--weights", default="none", show_default=True, help="none, imagenet or a weights file.")
@click.option("--videos", type=click.Path(), help="Clips (<Class>/*.avi) to take the compared frames from.  [default: generated]")
@click.option("--effect-frames", type=int, default=64, show_default=True, help="Frames the precisions are compared on.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Interleaved timing rounds (the median is kept).")
@click.option("--seconds", "min_seconds", type=float, default=2.0, show_default=True, help="Per setting and round.")
@json_out_option()
@user_errors
def bench_model(batch_sizes, precisions, backbone_names, size, weights, videos, effect_frames, rounds, min_seconds, json_out):
    """The backbones alone, side by side, by precision and batch size (frames/s, feature size), and how far each
    precision's features are from float32's."""
    from ucfpipe.bench import model as bench

    echo = _echo(json_out)
    sizes = comma_list(batch_sizes, "--batch-sizes", int, positive=True, repeats="drop")  # each once, in the order given
    chosen = comma_list(precisions, "--precisions", choices=PRECISIONS, repeats="drop")
    names = tuple(BACKBONES) if backbone_names.strip() == "all" else comma_list(backbone_names, "--backbone", repeats="drop")
    if min(effect_frames, rounds) < 1:
        raise UcfpipeError("--effect-frames and --rounds must be at least 1")
    results = bench.run(sizes, chosen, size, weights, videos, effect_frames, rounds, min_seconds, log=echo,
                        backbones=names)
    echo(bench.format_table(results))
    if json_out:
        write_json(Path(json_out), results)


@bench.command("long")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory to predict with (e.g. demo/runs/split1).")
@click.option("--minutes", default="1,10,30", show_default=True, help="Video lengths, comma-separated.")
@click.option("--size", type=int, default=64, show_default=True, help="Frame width and height of the generated videos.")
@click.option("--fps", type=float, default=25.0, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="bench-long", show_default=True,
              help="Where the generated videos are kept (written once, reused).")
@json_out_option()
@user_errors
def bench_long(run_dir, minutes, size, fps, directory, json_out):
    """Windowed prediction on generated long videos, each length in its own process: frames/s and peak RSS."""
    from ucfpipe.bench import long as bench

    echo = _echo(json_out)
    lengths = comma_list(minutes, "--minutes", float)
    if min(lengths) <= 0 or size < 16 or fps <= 0:
        raise UcfpipeError("--minutes and --fps must be positive, --size at least 16")
    results = bench.run(run_dir, lengths, size, fps, directory, log=echo)
    echo(bench.format_table(results))
    if json_out:
        write_json(Path(json_out), results)


def _echo(json_out, flag: str = "--json-out"):
    """--json-out is checked before any measurement; `-` sends the JSON alone to standard output."""
    if json_out is not None:
        output(json_out, flag)
    return stdout_echo(json_out)


@bench.command("train")
@config_option("train")
@click.option("--clips", type=int, default=9537, show_default=True, help="Training clips (split 1 has 9,537).")
@click.option("--frames", type=int, default=40, show_default=True, help="T, steps per clip.")
@click.option("--dim", type=int, default=512, show_default=True, help="Features per step.")
@click.option("--classes", "num_classes", type=int, default=101, show_default=True)
@click.option("--epochs", type=int, default=2, show_default=True, help="The first includes compilation; at least 2.")
@settings_options(TrainConfig, "batch_size", "units", "cell", "layers", "heads", "distribute")
@user_errors
def bench_train(config_file, clips, frames, dim, num_classes, epochs, **flags):
    """Time training epochs of the train config's model on random features of the given shape, in memory."""
    from ucfpipe.bench import train as bench
    from ucfpipe.config import TrainConfig

    # The benchmark reads no data: placeholder paths only satisfy the config's validation.
    config = load_config(TrainConfig, config_file, {**flags, "features": "-", "splits": "-", "out": "-"})
    try:
        bench.run(config, clips=clips, frames=frames, dim=dim, num_classes=num_classes, epochs=epochs, log=click.echo)
    except ValueError as err:
        raise UcfpipeError(str(err)) from None
