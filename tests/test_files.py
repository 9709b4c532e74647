"""atomic: the one way files are written (temp beside the target, then rename)."""

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import FifoReader, make_nodes
from ucfpipe.core import destinations, files as atomic
from ucfpipe.core.errors import UcfpipeError


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.replacing(path, keep_suffix=True) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".keras") and tmp.name.startswith(".")
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_temporaries_end_in_tmp_unless_the_suffix_matters(tmp_path):
    assert atomic.temp_path(tmp_path / "a.json").name.endswith(".tmp")
    assert atomic.temp_path(tmp_path / "b.weights.h5", keep_suffix=True).name.endswith(".tmp.weights.h5")
    assert list(tmp_path.glob(atomic.temp_glob("a.json"))) == []
    atomic.temp_path(tmp_path / "a.json").write_text("left by a killed writer")
    assert len(list(tmp_path.glob(atomic.temp_glob("a.json")))) == 1


@pytest.mark.parametrize("needed, pattern", [(None, r"^\S+a\.json: the disk is full"),
                                             (2048, r"^no space left on the device of \S+a\.json \(it needs about 0\.0 MB")])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, needed, pattern):
    path = tmp_path / "a.json"
    with pytest.raises(atomic.DiskFull, match=pattern) as raised:
        with atomic.replacing(path, needed=needed) as tmp:
            tmp.write_text("x")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as err:
                raise RuntimeError("a library wrapped it") from err  # found down the chain of causes
    assert isinstance(raised.value, UcfpipeError) and list(tmp_path.iterdir()) == []


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "lists"
    with pytest.raises(RuntimeError):
        with atomic.replacing_dir(out) as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError("stopped half-way")
    assert list(tmp_path.iterdir()) == []
    with atomic.replacing_dir(out) as staging:
        (staging / "a.txt").write_text("a")
    assert [p.name for p in tmp_path.iterdir()] == ["lists"] and (out / "a.txt").read_text() == "a"


KILLED_WRITER = """
import sys, time
from ucfpipe.core import files as atomic
with atomic.replacing_dir(sys.argv[1]) as staging:
    (staging / "half.bin").write_bytes(b"x" * 1000)
    print(staging, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_staging_directory_left_by_kill_9_is_removed_by_the_next_writer(tmp_path):
    out = tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": str(Path(atomic.__file__).parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    staging = Path(writer.stdout.readline().strip())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    assert staging.is_dir() and staging.name == f".export.{writer.pid}.tmp"  # what kill -9 leaves
    running = tmp_path / f".export.{os.getppid()}.tmp"  # a writer that still runs keeps its staging directory
    running.mkdir()
    other = tmp_path / f".exports.{writer.pid}.tmp"  # another target's is not this writer's to clear
    other.mkdir()
    with atomic.replacing_dir(out) as new:
        (new / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", running.name, other.name])


# -- only a regular file is ever replaced (real nodes: the tests run as root) -------------------------------------
def test_a_character_device_is_written_in_place_and_stays_a_device(tmp_path):
    nodes = make_nodes(tmp_path)
    before = sorted(os.listdir(tmp_path))
    atomic.write_text(nodes["device"], "into the device\n")
    with atomic.replacing(nodes["device"], keep_suffix=True) as tmp:  # Keras, OpenCV, matplotlib want a path
        assert tmp.parent != tmp_path  # never a temporary beside a device (in /dev, say)
        tmp.write_text("x")
    assert stat.S_ISCHR(os.stat(nodes["device"]).st_mode) and sorted(os.listdir(tmp_path)) == before


def test_a_fifo_gets_the_bytes_in_place(tmp_path):
    nodes = make_nodes(tmp_path)
    with FifoReader(nodes["fifo"]) as reader:
        atomic.write_json(nodes["fifo"], {"a": 1})
    assert reader.data == b'{\n  "a": 1\n}\n' and stat.S_ISFIFO(os.lstat(nodes["fifo"]).st_mode)


def test_through_a_link_the_file_it_points_to_is_replaced_and_the_link_stays(tmp_path):
    nodes = make_nodes(tmp_path)
    real = tmp_path / "elsewhere" / "real.out"
    with atomic.replacing(nodes["link"]) as tmp:
        assert tmp.parent == real.parent  # beside the file replaced: the rename stays on its file system
        tmp.write_text("new\n")
    assert nodes["link"].is_symlink() and os.readlink(nodes["link"]) == str(real) and real.read_text() == "new\n"
    assert sorted(os.listdir(real.parent)) == ["real.out"]


def test_a_dangling_link_makes_the_file_it_names_or_is_refused_in_one_line(tmp_path):
    nodes = make_nodes(tmp_path)
    atomic.write_text(nodes["dangling"], "made\n")
    assert nodes["dangling"].is_symlink() and (tmp_path / "elsewhere" / "made.out").read_text() == "made\n"
    with pytest.raises(UcfpipeError, match=r"nowhere\.out is a link to \S+/missing/x\.out, and its folder \S+missing "
                                           r"does not exist; create the folder or write elsewhere$"):
        atomic.write_text(nodes["into_missing"], "x")


@pytest.mark.parametrize("node, said", [("folder", "is a folder, not a file; name a file in it or pass another --html"),
                                        ("block", "is a block device, not a file; name a file or pass another --html")])
def test_a_folder_or_block_device_is_refused_before_anything_is_written(tmp_path, node, said):
    nodes = make_nodes(tmp_path)
    with pytest.raises(UcfpipeError, match=f"^--html {nodes[node]} {said}$"):
        destinations.output(nodes[node], "--html")
    with pytest.raises(UcfpipeError, match=said.replace("--html", "write elsewhere").split(" or ")[0]):
        with atomic.replacing(nodes[node]):
            raise AssertionError("the writer ran")
    assert nodes["folder"].is_dir() and stat.S_ISBLK(os.lstat(nodes["block"]).st_mode)


def test_dash_is_standard_output_where_the_command_allows_it(capsys):
    atomic.write_text("-", "to standard output\n")
    assert capsys.readouterr().out == "to standard output\n"
    with pytest.raises(UcfpipeError, match="^--out cannot be - .standard output. here"):
        destinations.output("-", "--out", stdout=False)


@pytest.mark.slow
def test_dev_stdout_into_a_file_keeps_what_was_printed_before_and_after(tmp_path):
    """`--html /dev/stdout > page.html`: the descriptor is written through, never the file renamed away. (Named
    /dev/fd/1 here, the same link: a regression then fails inside /proc instead of replacing the machine's
    /dev/stdout, as the old code did.)"""
    script = "from ucfpipe.core import files; print('before'); files.write_text('/dev/fd/1', 'page\\n'); print('after')"
    env = {**os.environ, "PYTHONPATH": str(Path(atomic.__file__).parents[2])}
    with open(tmp_path / "page.html", "w") as handle:
        subprocess.run([sys.executable, "-c", script], stdout=handle, env=env, check=True)
    assert (tmp_path / "page.html").read_text() == "before\npage\nafter\n"
    piped = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert piped.stdout == "before\npage\nafter\n"


def test_errors_name_the_users_path_never_the_temporary(tmp_path):
    with pytest.raises(UcfpipeError, match=r"^\S+/out/multi\.html: folder \S+/out does not exist; create the folder"):
        atomic.write_text(tmp_path / "out" / "multi.html", "x")
    folder = tmp_path / "gone"
    folder.mkdir()
    with pytest.raises(UcfpipeError) as raised:
        with atomic.replacing(folder / "a.json") as tmp:
            folder.rmdir()  # removed while the file was being written
            tmp.write_text("x")
    assert str(raised.value).startswith(f"{folder / 'a.json'}: folder {folder} does not exist") and ".tmp" not in str(raised.value)


def test_a_read_only_folder_is_named_with_how_to_fix_it(read_only_folder):
    line = f"folder {read_only_folder} is on a read-only file system; make it writable or"
    with pytest.raises(UcfpipeError, match=f"^--json-out {read_only_folder}/a.json: {line} pass another --json-out$"):
        destinations.output(read_only_folder / "a.json", "--json-out")
    with pytest.raises(UcfpipeError, match=f"^{read_only_folder}/a.json: {line} write elsewhere$"):
        atomic.write_json(read_only_folder / "a.json", {})
    with pytest.raises(UcfpipeError, match=f"^--out {read_only_folder}/new/export: {line} pass another --out$"):
        destinations.output_dir(read_only_folder / "new" / "export", "--out")
    with pytest.raises(UcfpipeError, match=f"^{read_only_folder}/export: {line} write elsewhere$"):
        with atomic.replacing_dir(read_only_folder / "export"):
            raise AssertionError("the writer ran")


# -- directories --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", ["device", "fifo", "link", "block"])
def test_a_directory_output_that_is_not_a_folder_is_refused_and_left_alone(tmp_path, node):
    nodes = make_nodes(tmp_path)
    mode = os.lstat(nodes[node]).st_mode
    with pytest.raises(UcfpipeError, match=f"^--out {nodes[node]} is a .*, not a folder; pass another --out$"):
        destinations.output_dir(nodes[node], "--out")
    with pytest.raises(UcfpipeError, match="not a folder"):
        with atomic.replacing_dir(nodes[node]):
            raise AssertionError("the writer ran")
    assert os.lstat(nodes[node]).st_mode == mode and (tmp_path / "elsewhere" / "real.out").read_text() == "old\n"


def test_a_directory_through_a_link_is_made_where_it_points_and_the_link_stays(tmp_path):
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / "export")
    with atomic.replacing_dir(tmp_path / "export") as staging:
        (staging / "a.txt").write_text("a")
    assert (tmp_path / "export").is_symlink() and (tmp_path / "empty" / "a.txt").read_text() == "a"


def test_a_failed_directory_write_removes_the_folders_it_made_and_update_keeps_other_files(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.replacing_dir(tmp_path / "out" / "video") as staging:
            (staging / "windows.csv").write_text("half")
            raise RuntimeError("the disk filled")
    assert list(tmp_path.iterdir()) == []  # neither the video's folder nor the --out folder made for it
    (tmp_path / "out" / "video").mkdir(parents=True)
    (tmp_path / "out" / "video" / "windows.csv").write_text("old")
    (tmp_path / "out" / "video" / "notes.txt").write_text("mine")
    with atomic.replacing_dir(tmp_path / "out" / "video", update=True) as staging:
        (staging / "windows.csv").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["video"]
    assert (tmp_path / "out" / "video" / "windows.csv").read_text() == "new"
    assert (tmp_path / "out" / "video" / "notes.txt").read_text() == "mine"


def test_clear_stale_removes_what_dead_writers_left_of_the_names_given(tmp_path):
    """The one clean-up of temporaries (the cache writer's, replacing_dir's staging folders, train's): a dead
    writer's files and folders go, a running writer's stay unless the caller holds the lock."""
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    left = {name: tmp_path / name for name in (f".a.json.{dead.pid}.tmp", f".b.json.{dead.pid}.tmp",
                                               f".a.weights.h5.{dead.pid}.tmp.weights.h5", f".a.json.{os.getpid()}.tmp")}
    for path in left.values():
        path.write_text("half")
    (tmp_path / f".out.{dead.pid}.tmp").mkdir()
    (tmp_path / "a.json").write_text("whole")
    removed = atomic.clear_stale(tmp_path, ["a.json", "a.weights.h5", "out"])
    assert sorted(p.name for p in removed) == sorted([f".a.json.{dead.pid}.tmp", f".a.weights.h5.{dead.pid}.tmp.weights.h5",
                                                      f".out.{dead.pid}.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.json", f".b.json.{dead.pid}.tmp", f".a.json.{os.getpid()}.tmp"])
    atomic.clear_stale(tmp_path, held=True)  # under the lock: every temporary is stale, this process's own too
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
