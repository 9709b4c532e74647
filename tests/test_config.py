"""Each setting's default and choices are written once, in config.py's dataclasses: the `[default: ...]` of
every command's --help, the values in stages/*.toml and the Makefile's data paths must agree with them, and
every choice list a command offers must be config's tuple. Editing any one of them alone fails here."""

import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import invoke
from ucfpipe.cli import main
from ucfpipe.commands import options
from ucfpipe.config import CHOICES, ExtractConfig, FinetuneConfig, TrainConfig, described, load_config, setting
from ucfpipe.core.errors import UcfpipeError

ROOT = Path(__file__).resolve().parent.parent
STAGES = {"extract": ExtractConfig, "train": TrainConfig, "finetune": FinetuneConfig}
# Commands whose flags are settings of a dataclass: (dataclass, the settings among their flags; None = all).
COMMANDS = {
    "extract": (ExtractConfig, None),
    "train": (TrainConfig, None),
    "finetune": (FinetuneConfig, None),
    "compare": (TrainConfig, None),
    "bench-train": (TrainConfig, {"batch_size", "units", "cell", "layers", "heads", "distribute"}),  # its --epochs is the bench's own
    "check": (ExtractConfig, {"dataset", "frames", "workers"}),  # no config file: extract's defaults, given directly
    "splits": (ExtractConfig, {"dataset"}),
}
# Where the data lives: unset in the dataclasses (a command without them says which flag is missing) and set in
# the TOML files to the Makefile's locations, which README's examples without --videos/--splits rely on.
LOCATIONS = {"videos": "VIDEOS", "splits": "SPLITS"}
# Settings without a default: validate() refuses them unset, naming the flag.
REQUIRED = {ExtractConfig: ("videos", "splits"), TrainConfig: ("splits", "out"), FinetuneConfig: ("videos", "splits")}


def help_entries(*command: str) -> dict[str, str]:
    """`ucfpipe COMMAND [SUBCOMMAND] --help`, one whitespace-normalised text per option, by setting name."""
    result = invoke(*command, "--help", terminal_width=1000, max_content_width=1000)
    assert result.exit_code == 0, result.output
    options = result.output.split("\nOptions:\n", 1)[1]
    entries = {}
    for chunk in re.split(r"\n(?=  -)", options):
        text = " ".join(chunk.split())
        match = re.match(r"--([a-z][\w-]*)", text)
        if match:
            entries[match.group(1).replace("-", "_")] = text
    return entries


def shown_default(text: str) -> str | None:
    match = re.search(r"\[default: (.*?)\]$", text)
    return match.group(1) if match else None


def resolved(cls):
    """The settings after validate(), which works out the defaults written as "" (e.g. the backbone's layer)."""
    return cls(**{name: "x" for name in REQUIRED[cls]}).validate()


def makefile_variables() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    found = dict(re.findall(r"^(\w+) \?= (.*)$", text, re.M))
    return {name: re.sub(r"\$\((\w+)\)", lambda m: found[m.group(1)], value) for name, value in found.items()}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_defaults_are_the_dataclass_defaults(command):
    cls, names = COMMANDS[command]
    entries = help_entries(command)
    settings = {f.name for f in fields(cls)} & set(entries) if names is None else names
    assert settings, entries
    filled = resolved(cls)
    for name in sorted(settings):
        default, kind = setting(cls, name)
        shown = shown_default(entries[name])
        if kind is bool:  # a flag is off unless given; a --yes/--no pair names its default side
            pair = re.match(r"--([\w-]+) / --([\w-]+)", entries[name])
            assert default is False and shown == (pair.group(2) if pair else None), entries[name]
        elif default == "" and (name in REQUIRED[cls] or getattr(filled, name) == ""):  # to give, or none
            assert shown is None, (command, name, entries[name])
        elif default == "":  # worked out by validate(), e.g. from the backbone: the help must say to what
            placeholders = {f"<{f.name}>": str(getattr(filled, f.name)) for f in fields(cls)}
            text = re.sub(r"<\w+>", lambda m: placeholders[m.group(0)], shown or "")
            assert getattr(filled, name) in text, (command, name, entries[name])
        else:
            assert shown is not None and kind(shown) == default, (command, name, entries[name])


@pytest.mark.parametrize("command", ["extract", "train", "finetune", "compare", "bench-train"])
def test_setting_flags_default_to_not_given_so_a_config_file_wins(command):
    """Precedence defaults < file < flags needs every setting flag to default to None (not given)."""
    cls, names = COMMANDS[command]
    params = {p.name: p for p in main.commands[command].params}
    settings = [f.name for f in fields(cls) if f.name in params and (names is None or f.name in names)]
    assert settings and all(params[name].default is None for name in settings), command


@pytest.mark.parametrize("command", ["extract", "train", "finetune"])
def test_every_setting_of_a_stage_has_a_flag(command):
    assert {f.name for f in fields(STAGES[command])} <= set(help_entries(command))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_choice_of_a_setting_is_configs_tuple(command):
    """Choices are click's [a|b|c] where click refuses others, or listed in the help where the library refuses
    them (dataset, backbone: the same message for a flag and a config file's key)."""
    entries = help_entries(command)
    for name in sorted(set(CHOICES) & set(entries)):
        listed = re.match(r"--[\w-]+ \[([\w|]+)\]", entries[name])
        if listed:
            assert tuple(listed.group(1).split("|")) == CHOICES[name], (command, entries[name])
        else:
            assert ", ".join(CHOICES[name]) in entries[name], (command, entries[name])


def test_bench_precision_choices_are_configs():
    assert help_entries("bench", "extract")["precision"].startswith(f"--precision [{'|'.join(CHOICES['precision'])}]")


@pytest.mark.parametrize("command", ["extract", "train", "finetune"])
def test_each_flags_help_is_the_one_its_setting_declares_in_config(command):
    cls = STAGES[command]
    entries = help_entries(command)
    for field in fields(cls):
        written = " ".join(described(cls, field.name).metadata["help"].split())
        assert written.format(choices=", ".join(CHOICES.get(field.name, ()))) in entries[field.name], (command, field.name)


@pytest.mark.parametrize("command", ["compare", "bench-train"])
def test_a_setting_several_commands_take_is_declared_once(command):
    """train, compare and bench train show a TrainConfig setting with the same flag, help and default; only
    compare's --out (a folder of runs) and --seed (the ensemble's first) mean something else there."""
    train, entries = help_entries("train"), help_entries(command)
    shared = set(entries) & (COMMANDS[command][1] or {f.name for f in fields(TrainConfig)}) - {"out", "seed"}
    assert len(shared) >= 4 and all(entries[name] == train[name] for name in shared), command


@pytest.mark.parametrize("stage", STAGES)
def test_toml_files_document_every_setting_at_its_default(stage):
    cls = STAGES[stage]
    path = ROOT / "stages" / f"{stage}.toml"
    values = tomllib.loads(path.read_text())
    assert set(values) == {f.name for f in fields(cls)}, "every setting, documented in the file"
    make = makefile_variables()
    for name, value in values.items():
        if name in LOCATIONS:
            assert setting(cls, name)[0] == "" and value == make[LOCATIONS[name]], (stage, name)
        else:
            assert value == setting(cls, name)[0], (stage, name, value)
    load_config(cls, path, {name: "x" for name in REQUIRED[cls] if not values[name]})  # known keys, right types


def test_toml_cache_paths_are_the_makefiles():
    make = makefile_variables()
    assert tomllib.loads((ROOT / "stages/extract.toml").read_text())["out"] == make["FEATURES"]
    assert tomllib.loads((ROOT / "stages/train.toml").read_text())["features"] == make["FEATURES"]


def test_the_help_follows_an_edited_dataclass(monkeypatch):
    """The help is built from config.py, not copied: a changed default or choice tuple shows, and flags stay
    None (not given) until passed."""
    import click

    learning_rate = next(f for f in fields(TrainConfig) if f.name == "learning_rate")
    monkeypatch.setattr(learning_rate, "default", 1e-3)
    monkeypatch.setitem(CHOICES, "monitor", ("val_loss", "val_top5"))

    @click.command()
    @options.setting_option(TrainConfig, "learning_rate", help="Adam.")
    @options.setting_option(TrainConfig, "monitor", help="Picks.")
    def command(**flags):
        click.echo(repr(flags))

    runner = CliRunner()
    shown = runner.invoke(command, ["--help"]).output
    assert "Adam.  [default: 0.001]" in shown and "--monitor [val_loss|val_top5]" in shown
    assert runner.invoke(command, []).output.strip() == "{'learning_rate': None, 'monitor': None}"
    assert runner.invoke(command, ["--learning-rate", "0.01"]).output.strip() == "{'learning_rate': 0.01, 'monitor': None}"


def test_finetune_reads_its_config_file_and_flags_override_it(synth_dataset, tmp_path):
    """Every FinetuneConfig field can come from the file; a flag wins over the file (checked through
    validation, before any model is built)."""
    data = ["--videos", str(synth_dataset["videos"]), "--splits", str(synth_dataset["splits"])]
    config = tmp_path / "finetune.toml"
    config.write_text('out = "from_file.h5"\npatience = 4\n')
    from_file = invoke("finetune", "--config", str(config), *data)
    # each message names the setting where the user gave it: the file's key, or the flag
    assert from_file.exit_code == 2 and f"{config}: out must end in .weights.h5 (Keras' weights format), got from_file.h5" in from_file.output
    from_flag = invoke("finetune", "--config", str(config), *data, "--out", "from_flag.h5")
    assert from_flag.exit_code == 2 and "Error: --out must end in .weights.h5 (Keras' weights format), got from_flag.h5" in from_flag.output
    config.write_text('dropout = 1.5\n')
    bad = invoke("finetune", "--config", str(config), *data)
    assert bad.exit_code == 2 and f"{config}: dropout must be in [0, 1), got 1.5" in bad.output
    config.write_text('patience = "two"\n')
    bad = invoke("finetune", "--config", str(config), *data)
    assert bad.exit_code == 2 and "patience must be of type int" in bad.output
    assert invoke("finetune", "--config", str(ROOT / "stages/finetune.toml"), *data,
                  "--dropout", "1.5").output.count("dropout must be in [0, 1)") == 1


def test_a_layer_setting_is_checked_without_keras(monkeypatch):
    """Validation reads the backbone table's pattern: with Keras (and every module of ours that holds it) made
    unimportable, a layer other than the default passes and a typo is one line naming the choices."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "keras", None)
    for name, module in list(sys.modules.items()):
        if name.startswith("ucfpipe.") and isinstance(getattr(module, "keras", None), types.ModuleType):
            monkeypatch.setitem(sys.modules, name, None)
    config = ExtractConfig(videos="v", splits="s", backbone="resnet50", layer="conv4_block6_out").validate()
    assert config.layer == "conv4_block6_out"
    assert ExtractConfig(videos="v", splits="s", layer="output").validate().layer == "output"
    with pytest.raises(UcfpipeError, match=r"^vgg16 has no layer 'block9' to store; choose output or a layer named like "
                                           r"block\\d_\(conv\\d\|pool\) \(its default: block5_conv3\)$"):
        ExtractConfig(videos="v", splits="s", layer="block9").validate()


def test_finetunes_default_output_names_its_backbone_and_split():
    config = FinetuneConfig(videos="v", splits="s", backbone="resnet50", split=2).validate()
    assert config.out == "weights/resnet50_finetuned_split2.weights.h5"
    assert FinetuneConfig(videos="v", splits="s").validate().out == "weights/vgg16_finetuned_split1.weights.h5"


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "Error: --batch-size must be a positive integer, got 0"),
    (["--learning-rate", "0"], "Error: --learning-rate must be positive, got 0.0"),
    (["--label-smoothing", "1"], "Error: --label-smoothing must be in [0, 1), got 1.0"),
    (["--split", "4"], "Error: --split must be 1, 2 or 3, got 4"),
])
def test_bad_settings_are_named_by_their_flags_not_their_fields(flags, message, tmp_path):
    result = invoke("train", "--features", str(tmp_path), "--splits", str(tmp_path), "--out",
                    str(tmp_path / "run"), *flags)
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_bad_setting_from_a_config_file_names_the_file_and_its_key(tmp_path):
    config = tmp_path / "extract.toml"
    config.write_text('batch-size = 0\nshard = "2/2"\n')
    common = ["extract", "--config", str(config), "--videos", "v", "--splits", "s"]
    assert f"Error: {config}: batch-size must be a positive integer, got 0" in invoke(*common).output
    flagged = invoke(*common, "--batch-size", "8").output
    assert f"Error: {config}: shard must be i/N with 0 <= i < N (e.g. 0/4 ... 3/4), got 2/2" in flagged


def test_synth_names_its_flags(tmp_path):
    result = invoke("synth", str(tmp_path / "d"), "--classes", "3")
    assert result.exit_code == 2 and "Error: --classes must be an even number from 2 to 12" in result.output
    result = invoke("synth", str(tmp_path / "d"), "--clips-per-group", "0")
    assert "Error: --clips-per-group must be an integer from 1 to 99" in result.output and "clips_per_group" not in result.output


def test_settings_that_differ_are_told_in_plain_values():
    from ucfpipe.cache.format import describe_difference

    told = describe_difference({"frames": 8, "views": ["center"]}, {"frames": 16, "views": ["center", "flip"], "backbone": "resnet50"})
    assert told == "backbone: the default in cache vs resnet50 now; frames: 8 in cache vs 16 now; views: center in cache vs center,flip now"
