"""The command's start is quiet: TensorFlow's C++ start-up lines are filtered, everything else passes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import types

import pytest

from ucfpipe.core import interrupts, quiet

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`

STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795614226.650805    4818 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.\n"
)


def test_only_the_start_up_lines_are_filtered(capfd):
    with quiet.stderr_filtered():
        os.write(2, (STARTUP + "a real warning\n" + STARTUP + "E0000 an error from C++\n").encode())
    assert capfd.readouterr().err == "a real warning\nE0000 an error from C++\n"


def test_a_bad_input_after_keras_loaded_is_one_line_on_stderr(tmp_path):
    (tmp_path / "not-a-run").mkdir()
    # `eval` imports Keras (through the run's model code) before it finds that the directory holds no run.
    done = subprocess.run([sys.executable, "-m", "ucfpipe.cli", "eval", "--run", str(tmp_path / "not-a-run")],
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"Error: {tmp_path / 'not-a-run'} is not a ucfpipe run directory (no run.json); "
                                        "pass the --out directory of `ucfpipe train`"], done.stderr
    probe = [sys.executable, "-c", "import sys, keras; print(type(keras.__spec__.loader).__name__)"]
    assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() != "_QuietLoader"  # the library alone: untouched


def test_a_ctrl_c_while_the_backend_loads_is_raised_once_it_has_loaded():
    # A KeyboardInterrupt half-way through TensorFlow's C start-up can crash the interpreter at exit (seen as
    # exit -11 instead of 130), so the first import of the backend runs to its end before the interrupt is raised.
    reached = []

    class Loader:
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            signal.raise_signal(signal.SIGINT)
            reached.append("the module's last line")

    previous = interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            quiet._QuietLoader(Loader()).exec_module(types.ModuleType("backend"))
    finally:
        interrupts.restore(previous)
    assert reached == ["the module's last line"]


def test_stderr_lines_dropped_drops_whole_matching_lines_and_passes_the_rest_at_once(capfd):
    import re
    import time

    with quiet.stderr_lines_dropped(re.compile(r"\[[^]]*\] noisy\.cc:\d+: exactly this")):
        os.write(2, b"[2026-01-01 E 1 1] noisy.cc:12: exactly this\n")
        os.write(2, b"kept line\n[2026-01-01 E 1 1] noisy.cc:12: exactly this, and more\n")
        os.write(2, b"\r 50% progress")  # a progress bar's partial line: on the real stderr at once
        deadline, err = time.monotonic() + 5, ""
        while "50% progress" not in err:
            assert time.monotonic() < deadline, "a partial line was held back"
            time.sleep(0.01)
            err += capfd.readouterr().err
        os.write(2, b"[held until its end] still kept")
    err += capfd.readouterr().err
    assert "exactly this\n" not in err.replace("exactly this, and more\n", "")
    assert "kept line\n" in err and "exactly this, and more\n" in err and err.endswith("[held until its end] still kept")
    os.write(2, b"after\n")  # fd 2 is the real stderr again
    assert capfd.readouterr().err == "after\n"
