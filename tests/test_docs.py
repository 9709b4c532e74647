"""The README and docs/ stay true to the code: the site builds strictly, every relative link and anchor
resolves, every `ucfpipe ...` and `make ...` line shown names a real command, target and options, and the
Python examples marked `<!-- runnable -->` run (docs/development.md, "Documentation", says the convention).

Nothing here loads Keras: the command lines are resolved through the click group, not run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
RUNNABLE = re.compile(r"^<!-- runnable -->\n```python\n(.*?)^```", re.S | re.M)
SEPARATORS = {"&&", "||", ";", "|", "&", ">", ">>", "2>", "<"}


def page_name(path: Path) -> str:
    return str(path.relative_to(REPO))


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where a link or an anchor is meant."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`]*`", "", text)


def slug(heading: str) -> str:
    """Python-Markdown's toc slug, as MkDocs (and, for these headings, GitHub) make anchors."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", path.read_text()), flags=re.M)}


# -- (a) the site builds ------------------------------------------------------------------------------------
def mkdocs_command() -> list[str] | None:
    if importlib.util.find_spec("mkdocs") is not None and importlib.util.find_spec("material") is not None:
        return [sys.executable, "-m", "mkdocs"]
    found = shutil.which("mkdocs")
    return [found] if found else None


def test_the_site_builds_strictly_with_mkdocs(tmp_path):
    command = mkdocs_command()
    if command is None:
        pytest.skip('MkDocs is not installed: pip install -e ".[docs]" (or make docs) to check the site build')
    done = subprocess.run(command + ["build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    built = "".join(p.read_text() for p in (tmp_path / "site").glob("**/*.html"))
    assert "fonts.googleapis.com" not in built, "theme.font must stay false: the site must work offline"


def test_every_page_is_in_the_navigation():
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", (REPO / "mkdocs.yml").read_text(), flags=re.M))
    assert listed == {p.name for p in PAGES if p.parent.name == "docs"}


# -- (b) links ----------------------------------------------------------------------------------------------
def test_every_relative_link_points_at_a_file_and_anchor_that_exist():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page_name(page)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page_name(page)}: {target} (no heading with that anchor)")
    assert not broken, "\n".join(broken)


def test_the_readme_links_to_every_docs_page():
    linked = {Path(t).name for t in re.findall(r"\]\(docs/([\w-]+\.md)", (REPO / "README.md").read_text())}
    assert linked >= {p.name for p in PAGES if p.parent.name == "docs" and p.name != "index.md"}


# -- (c) commands shown -------------------------------------------------------------------------------------
def shown_code(path: Path) -> list[str]:
    """Shell-like lines: fenced blocks (not python), continued and wrapped lines joined, and inline code spans."""
    text = path.read_text()
    lines = []
    for language, body in FENCE.findall(text):
        if language != "python":
            body = re.sub(r"\\\n|\n(?=\s+[\[-])", " ", body)  # `\` continuations; synopses wrapped at an option
            lines += [line for line in body.splitlines() if not line.lstrip().startswith("#")]
    lines += [" ".join(span.split()) for span in re.findall(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", FENCE.sub("", text))]
    return lines


def segments(line: str) -> list[list[str]]:
    """The line's simple commands (split at && ; | > ...), each a list of words; comments dropped."""
    line = re.sub(r"(^|\s)#.*$", "", line)
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    found, current = [], []
    for word in words:
        if word in SEPARATORS or word.startswith(("2>", ">")):
            found.append(current)
            current = []
        else:
            current.append(word)
    return [s for s in found + [current] if s]


def ucfpipe_lines() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for line in shown_code(page):
            for words in segments(line):
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # KERAS_BACKEND=jax ucfpipe ...
                    words = words[1:]
                if len(words) > 1 and (words[0] == "ucfpipe" or words[0].endswith("/ucfpipe")):  # .venv/bin/ucfpipe
                    found.append((page_name(page), words[1:]))
    return found


def option_names(word: str) -> list[str]:
    """The options a synopsis word names: `[--dtype`, `--window]`, `--seeds=1,2` -> their names."""
    word = word.strip("[](),")
    return [word.split("=")[0]] if word.startswith("-") and word not in ("-", "--") else []


def wrong_command_lines(lines: list[tuple[str, list[str]]]) -> list[str]:
    """For each (page, words after `ucfpipe`): an unknown command, or an option its command does not have."""
    import click

    from ucfpipe.cli import main

    wrong = []
    for page, words in lines:
        context = click.Context(main)
        command, path = main, ["ucfpipe"]
        for word in words:
            child = command.get_command(context, word) if isinstance(command, click.Group) else None
            if child is None:
                break
            command, path = child, path + [word]
        if command is main:
            if not words[0].startswith("-"):
                wrong.append(f"{page}: `ucfpipe {' '.join(words)}`: no command {words[0]!r}")
            continue
        known = {"--help", "-h"} | {opt for p in command.params for opt in p.opts + p.secondary_opts}
        if isinstance(command, click.Group):  # `splits`: its own options, and those of `splits make`
            known |= {opt for sub in command.commands.values() for p in sub.params for opt in p.opts + p.secondary_opts}
        rest = words[len(path) - 1:]
        for word, after in zip(rest, rest[1:] + [""]):
            for name in option_names(word):
                if name not in known:
                    wrong.append(f"{page}: `{' '.join(path)}` has no option {name} (in `ucfpipe {' '.join(words)}`)")
                elif why := wrong_value(command, name, word.partition("=")[2] or after):
                    wrong.append(f"{page}: `{' '.join(path)} {name}` {why} (in `ucfpipe {' '.join(words)}`)")
    return wrong


def wrong_value(command, name: str, value: str) -> str:
    """Why `value` shown after option `name` fails when typed ("" if it does not): a number or choice option
    takes a real value, a placeholder in capitals (N, SECONDS) or alternatives as a|b, each a real value."""
    import click

    params = [p for sub in [command, *getattr(command, "commands", {}).values()] for p in sub.params if name in p.opts]
    value = value.strip("[](),")
    if not params or params[0].is_flag or not value or value.startswith("-") or re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
        return ""
    if not isinstance(params[0].type, (click.types.IntParamType, click.types.FloatParamType, click.Choice)):
        return ""
    for alternative in value.split("|"):
        try:
            params[0].type.convert(alternative, params[0], None)
        except click.BadParameter:
            return f"does not take {value!r}"
    return ""


def test_every_ucfpipe_command_line_shown_names_a_real_command_and_its_options():
    lines = ucfpipe_lines()
    assert len(lines) > 40, "the pages show many ucfpipe command lines; the parser found too few"
    assert {" ".join(words[:1]) for _, words in lines} >= {"extract", "train", "eval", "predict", "live", "export"}
    wrong = wrong_command_lines(lines)
    assert not wrong, "\n".join(wrong)


def test_the_command_checker_finds_a_made_up_command_and_option():
    wrong = wrong_command_lines([("x.md", ["extract", "--videos", "v", "[--no-such-flag", "1]"]),
                                 ("x.md", ["no-such-command", "--out", "o"]),
                                 ("x.md", ["splits", "make", "--videos", "v", "--frames", "8"]),
                                 ("x.md", ["bench", "--clips", "16"]),  # the old name resolves, with its options
                                 ("x.md", ["splits", "make", "[--folds", "1-3]", "[--seed", "N]", "[--test-fraction", "0.3]"])])
    assert wrong == ["x.md: `ucfpipe extract` has no option --no-such-flag (in `ucfpipe extract --videos v [--no-such-flag 1]`)",
                     "x.md: `ucfpipe no-such-command --out o`: no command 'no-such-command'",
                     "x.md: `ucfpipe splits make` has no option --frames (in `ucfpipe splits make --videos v --frames 8`)",
                     "x.md: `ucfpipe splits make --folds` does not take '1-3' (in `ucfpipe splits make [--folds 1-3] [--seed N] "
                     "[--test-fraction 0.3]`)"]


def make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([\w.-]+)\s*:(?!=)", makefile, flags=re.M))


def test_every_make_target_shown_exists():
    targets, wrong, seen = make_targets(), [], 0
    for page in PAGES:
        for line in shown_code(page):
            for words in segments(line):
                if words[0] != "make":
                    continue
                seen += 1
                for word in words[1:]:
                    if "=" not in word and not word.startswith("-") and word != "..." and word not in targets:
                        wrong.append(f"{page_name(page)}: `{' '.join(words)}`: no Makefile target {word!r}")
    assert seen > 20 and not wrong, "\n".join(wrong)


# -- (c) python blocks --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_cache_folder(tmp_path_factory) -> Path:
    """A folder holding `features/ucf101`: 3 clips of random features (T = 4, 512 per frame), written by the
    cache's own writer, so the examples that read a cache run as the pages write them."""
    from ucfpipe.cache.format import ClipFeatures
    from ucfpipe.cache.writer import open_for_writing, write_manifest

    folder = tmp_path_factory.mktemp("docs")
    cache = folder / "features" / "ucf101"
    settings = {"dtype": "float16", "views": ["center"], "frames": 4}
    ids = ["PushUps/v_PushUps_g02_c03", "PushUps/v_PushUps_g03_c01", "Rowing/v_Rowing_g02_c01"]
    rng = np.random.default_rng(0)
    with open_for_writing(cache, "0123456789abcdef", settings) as writer:
        for number, video_id in enumerate(ids):
            writer.add(ClipFeatures(video_id, number // 2, 2, 100, 25.0, np.array([[12, 37, 62, 87]], np.int32),
                                    rng.standard_normal((1, 4, 512)).astype(np.float16)))
        writer.flush()
        write_manifest(cache, fingerprint="0123456789abcdef", settings=settings, config={"frames": 4},
                       versions={}, shards=writer.shards, checksums=writer.checksums, num_clips=len(ids),
                       report={"listed": len(ids), "missing": [], "failed": {}}, part={})
    return folder


def runnable_blocks() -> list[tuple[str, str]]:
    return [(page_name(page), code) for page in PAGES for code in RUNNABLE.findall(page.read_text())]


def test_the_pages_mark_their_runnable_examples():
    assert {page for page, _ in runnable_blocks()} >= {"docs/stage-one.md", "docs/cache-format.md"}


@pytest.mark.parametrize("page,code", runnable_blocks(), ids=lambda v: v if v.endswith(".md") else "")
def test_a_runnable_python_block_runs(page, code, tiny_cache_folder):
    done = subprocess.run([sys.executable, "-c", code], cwd=tiny_cache_folder, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"{page}:\n{code}\n{done.stderr[-3000:]}"


def test_every_copy_of_the_export_example_is_the_shipped_classify_py():
    shipped = {p.read_text() for p in (REPO / "ucfpipe").glob("**/*.py")}
    copies = [(page_name(page), code) for page in PAGES for language, code in FENCE.findall(page.read_text())
              if language == "python" and code.startswith('"""Classify a video with a `ucfpipe export')]
    assert {page for page, _ in copies} >= {"README.md", "docs/export.md"}
    assert [page for page, code in copies if code not in shipped] == []


def test_the_readme_and_getting_started_show_the_same_demo_table():
    def table(path: Path) -> str:
        return re.search(r"^\| \| split 1 .*?\n(?!\|)", path.read_text(), flags=re.S | re.M).group(0)

    assert table(REPO / "README.md") == table(REPO / "docs" / "getting-started.md")


def test_the_readme_stays_a_front_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_no_docs_page_escapes_a_pipe_in_a_table():
    """GitHub renders `a\\|b` in a table as a|b, MkDocs keeps the backslash: docs/ pages say it in other words."""
    assert [page_name(p) for p in PAGES if p.parent.name == "docs" and "\\|" in p.read_text()] == []


# -- the architecture page's module table -------------------------------------------------------------------------
def table_modules(text: str) -> list[str]:
    """The modules the first column of docs/architecture.md's "Where each thing is" table names, as paths under
    ucfpipe/: in a cell, a bare name is in the folder of the cell's first name (`commands/data.py`, `stages.py`)."""
    section = text.split("## Where each thing is", 1)[1].split("\n## ", 1)[0]
    named = []
    for row in re.findall(r"^\| (.+?) \|", section, flags=re.M):
        folder = ""
        for name in re.findall(r"`([^`]+)`", row):
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/"
            named.append(name if "/" in name else folder + name)
    return [name for name in named if name.endswith(".py")]


def test_the_architecture_table_names_every_module_and_none_that_is_gone():
    listed = table_modules((REPO / "docs" / "architecture.md").read_text())
    package = REPO / "ucfpipe"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py") if p.name != "__init__.py"}
    missing = sorted(modules - set(listed))
    gone = sorted(name for name in set(listed) if not (package / name).is_file())
    assert not missing and not gone, (
        "docs/architecture.md, 'Where each thing is': "
        + "; ".join([f"add a row for ucfpipe/{name}" for name in missing] + [f"ucfpipe/{name} is gone: remove it" for name in gone]))


def test_the_table_check_finds_a_missing_and_a_gone_module():
    text = "## Where each thing is\n| module | holds |\n| --- | --- |\n| `core/files.py`, `gone.py` | x |\n| `cli.py` | y |\n"
    assert table_modules(text) == ["core/files.py", "core/gone.py", "cli.py"]


def stale_file_names(text: str, known: set[str]) -> list[str]:
    return sorted({name for name in re.findall(r"\b([a-z_0-9]+\.py)\b", text) if name not in known})


def test_docs_and_docstrings_name_only_files_that_exist():
    """A `name.py` in the docs or in the package's own text is a file of today's tree (the architecture table's
    last column, "was", names the flat layout's files on purpose)."""
    known = {p.name for folder in ("ucfpipe", "tests") for p in (REPO / folder).rglob("*.py")} | {"setup.py"}
    texts = {page_name(page): page.read_text() for page in PAGES}
    texts["docs/architecture.md"] = re.sub(r"^(\| .*\|) [^|]* \|$", r"\1", texts["docs/architecture.md"], flags=re.M)
    texts |= {page_name(p): p.read_text() for p in (REPO / "ucfpipe").rglob("*.py")}
    stale = {page: names for page, text in texts.items() if (names := stale_file_names(text, known))}
    assert not stale, f"files that do not exist (any more), by page: {stale}"
