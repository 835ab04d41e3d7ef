"""Scripts work as the README writes them: executable, and started by a Python without our dependencies they
re-run themselves with the project's environment, or say in one line what to do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "code").glob("*.py"))


def test_every_script_is_executable_in_git_and_bootstraps_first():
    listed = subprocess.run(
        ["git", "ls-files", "-s", "code/*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    modes = {line.split("\t")[1]: line.split()[0] for line in listed.splitlines()}
    assert len(SCRIPTS) == 10  # the five stages, tune, explain, predict, make_report, real_sky
    for script in SCRIPTS:
        assert modes.get(f"code/{script.name}") == "100755", script.name
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env python3\n")
        first_import = re.search(r"^(import|from) (?!__future__)\S+.*$", text, re.M).group(0)
        assert first_import.startswith("import stargal.bootstrap"), script.name


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A Python with nothing installed (no numpy, no astropy)."""
    folder = tmp_path_factory.mktemp("bare")
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARGAL_") and k != "PYTHONPATH"}
    return env | extra


def test_a_script_started_without_our_dependencies_reruns_with_the_environment(bare_python, tmp_path):
    proc = subprocess.run(
        [str(bare_python), str(ROOT / "code" / "01_alignment.py"), "--help"],
        cwd=tmp_path, env=_env(STARGAL_VENV=sys.prefix), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: 01_alignment.py")


def test_without_an_environment_one_line_says_what_to_do(bare_python, tmp_path):
    proc = subprocess.run(
        [str(bare_python), str(ROOT / "code" / "predict.py"), "--help"],
        cwd=tmp_path, env=_env(STARGAL_VENV=str(tmp_path / "no-venv")), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("predict.py: missing dependencies (numpy, ")
    assert "run ./run_scripts.sh --help once to set up .venv" in proc.stderr


@pytest.mark.slow
def test_tensorflow_starts_quietly_unless_verbose(tmp_path):
    code = "from stargal.model import import_keras; import_keras(); import sys; print('imported', file=sys.stderr)"
    # oneDNN forced on: TensorFlow then prints its start-up lines on any x86 processor, not only on Intel's
    env = _env(PYTHONPATH=str(ROOT / "code"), TF_ENABLE_ONEDNN_OPTS="1")
    quiet = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "imported\n" and quiet.stdout == ""
    loud = subprocess.run(
        [sys.executable, "-c", code], env=env | {"STARGAL_VERBOSE": "1"}, capture_output=True, text=True, timeout=300
    )
    assert loud.returncode == 0 and "oneDNN" in loud.stderr and loud.stderr.endswith("imported\n")


@pytest.mark.parametrize(
    ("signame", "status", "word"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")]
)
def test_a_stop_while_a_script_imports_its_libraries_is_one_line_not_a_traceback(tmp_path, signame, status, word):
    """A script spends a second or more importing numpy, astropy and the rest before its work starts; Ctrl-C or
    SIGTERM then must end it as it would later. Here a stand-in numpy sends the signal from inside that import."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "numpy.py").write_text(
        f"import os, signal, time\nos.kill(os.getpid(), signal.{signame})\ntime.sleep(30)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "code" / "predict.py"), "--help"],
        cwd=tmp_path, env=_env(PYTHONPATH=str(shadow)), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == status, proc.stderr
    assert proc.stderr == f"predict.py: {word}\n" and proc.stdout == ""


def test_a_stop_that_arrives_twice_while_a_script_imports_is_still_one_line(tmp_path):
    """SIGTERM sent to a run's process group reaches a stage from the group and again from the runner. Here the
    second one arrives while the first one's line is being written (a stand-in stderr sends it): one line, 143."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "numpy.py").write_text(
        "import os, signal, sys, time\n"
        "class Echo:\n"
        "    def __init__(self, stream):\n"
        "        self.stream, self.sent = stream, False\n"
        "    def write(self, text):\n"
        "        written = self.stream.write(text)\n"
        "        if not self.sent:\n"
        "            self.sent = True\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "        return written\n"
        "    def flush(self):\n"
        "        self.stream.flush()\n"
        "sys.stderr = Echo(sys.stderr)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "code" / "predict.py"), "--help"],
        cwd=tmp_path, env=_env(PYTHONPATH=str(shadow)), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr == "predict.py: terminated\n" and proc.stdout == ""
