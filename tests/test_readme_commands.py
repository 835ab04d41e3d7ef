"""Every command line of the README's bash blocks, run as written from a fresh clone after the quick start.

The clone reuses this test's virtual environment (``STARGAL_VENV``, and ``PYTHONPATH`` at the clone's code so
that tools/ensure_env.sh finds the project installed and leaves the shared environment alone). Commands that
cannot run here, or would take too long, are replaced by the closest command that can (``SUBSTITUTES``, each
with its reason); every other line runs exactly as written. Each must exit 0 with no traceback and no
TensorFlow start-up lines.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import QUICK_START, SAMPLE_DIR, run_script_here

ROOT = Path(__file__).resolve().parents[1]
SMALL = "--sim-shape 600 800 --fields 80 81 82 83"

# README line -> (the command run instead, or None to skip it, and why)
SUBSTITUTES: dict[str, tuple[str | None, str]] = {
    "./run_scripts.sh --demo": (
        "./run_scripts.sh --demo --small",
        "the reference-size demo takes ~10 min; the tiny sky runs every stage the same way",
    ),
    "./run_tests.sh": ("./run_tests.sh -q tests/test_geometry.py", "the whole suite would run itself"),
    "./run_scripts_no_download.sh --fields 80 103 120 --train-fields 103 --val-fields 120 --test-fields 80": (
        "./run_scripts_no_download.sh --fields 80 81 82 83 --train-fields 80 83 --val-fields 82 --test-fields 81 "
        "--epochs 6",
        "the tiny sky has fields 80-83, not 103 and 120: the quick start's own split, whose stages are then current "
        "(a second training would take ~1.5 min; the end-to-end test trains on the tiny sky)",
    ),
    "code/00_download.py": ("code/00_download.py --help", "needs the SDSS archive (no network here)"),
    "code/00_download.py --source https://mirror.example.org/sas/dr17/eboss/": (
        "code/00_download.py --help",
        "an example URL",
    ),
    "code/00_download.py --source ~/old_project/data": (
        "code/00_download.py --source data --data-dir copy --fields 80 81 82 83",
        "a local copy: the tiny sky's own data folder stands in for an old project's",
    ),
    "code/00_download.py --source simulated": (
        f"code/00_download.py --source simulated {SMALL}",
        "the ten full-size fields take ~2 min; the tiny sky's files are already current",
    ),
    "./build_run_docker.sh": (None, "needs a container engine; tools/test_docker.sh proves the image"),
    "./build_run_docker.sh --demo --small --workers 2": (None, "needs a container engine"),
    "./build_run_docker.sh --data-dir /big/disk/stargal --no-build --demo": (None, "needs a container engine"),
    'docker build -t stargal . && docker run --rm -v "$PWD/data:/app/data" --user "$(id -u):$(id -g)" stargal '
    "--demo --small": (None, "needs a container engine"),
    "code/00_download.py --fields 11-510 --scheduler /shared/sched.json --data-dir /shared/stargal": (
        "code/00_download.py --help",
        "needs a Dask cluster",
    ),
    "code/01_alignment.py --fields 11-510 --scheduler /shared/sched.json --data-dir /shared/stargal": (
        "code/01_alignment.py --help",
        "needs a Dask cluster",
    ),
    "code/02_preparation.py --fields 11-510 --train-fields 11-400 --val-fields 401-450 --test-fields 451-510 "
    "--scheduler /shared/sched.json --data-dir /shared/stargal": (
        "code/02_preparation.py --help",
        "needs a Dask cluster",
    ),
}
# the quick start's real field: taken from the real SDSS sample when it is here (no network), else --help
REAL_FIELD = SAMPLE_DIR / "004510-4-0030"
if (REAL_FIELD / "frame-r-004510-4-0030.fits.bz2").is_file():
    SUBSTITUTES |= {
        "code/00_download.py --run 4510 --camcol 4 --fields 30 --frames-only": (
            f"code/00_download.py --run 4510 --camcol 4 --fields 30 --frames-only --source {REAL_FIELD}",
            "SDSS is not reachable here; the real sample holds the same files",
        ),
    }
else:
    SUBSTITUTES |= {
        line: (f"{line.split()[0]} --help", "needs SDSS or the real sample, absent here")
        for line in (
            "code/00_download.py --run 4510 --camcol 4 --fields 30 --frames-only",
            "code/01_alignment.py --run 4510 --camcol 4 --fields 30",
            "code/predict.py --run 4510 --camcol 4 --field 30 --detect --model pretrained --out field30.ecsv",
        )
    }
SUBSTITUTES["code/real_sky.py --model pretrained"] = (
    "code/real_sky.py --help",
    "six real fields take several minutes; tests/test_pretrained.py runs the evaluation on real frames",
)
TF_NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "rebuild TensorFlow")


def readme_commands(text: str) -> list[str]:
    """The command lines of the README's ```bash blocks: comments dropped, backslash continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        pending = ""
        for raw in block.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            commands.append(" ".join((pending + line).split()))
            pending = ""
    return commands


def test_readme_commands_are_found_and_every_substitute_is_current():
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "./run_scripts.sh --demo --small" in commands
    assert any(c.startswith("code/predict.py") for c in commands)
    stale = [line for line in SUBSTITUTES if line not in commands]
    assert not stale, f"substitutes for lines no longer in the README: {stale}"


@pytest.mark.slow
@pytest.mark.xdist_group("quick_start")  # one worker, one clone: the fixture is per worker
def test_every_readme_command_runs_as_written_from_a_fresh_clone(quick_start):
    """The clone of the shared quick start: its first command has run there already; the rest run in README order.
    A command the same as one run before it (the quick start's, which the README gives again, or a substitute
    standing in for several lines) is a rerun and runs once: the end-to-end test reruns the quick start in this
    clone, and run_scripts_no_download.sh here reruns its stages after the real field's commands."""
    clone, env = quick_start.clone, quick_start.env
    commands = readme_commands((clone / "README.md").read_text(encoding="utf-8"))
    ran = []
    for line in commands:
        command, why = SUBSTITUTES.get(line, (line, ""))
        if command is None or command in ran:
            continue
        if not ran and command == QUICK_START:
            proc = quick_start.first_run
        else:
            proc = subprocess.run(
                ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=900
            )  # fmt: skip
        output = proc.stdout + proc.stderr
        context = f"{command}{f'  (for: {line}; {why})' if why else ''}\n{output[-3000:]}"
        assert proc.returncode == 0, context
        assert "Traceback" not in output, context
        assert not [n for n in TF_NOISE if n in output], context
        ran.append(command)
    assert ran[0] == QUICK_START and len(ran) >= 15
    assert (clone / "data" / "reports" / "report.pdf").is_file()
    predictions = [shlex.split(c)[shlex.split(c).index("--out") + 1] for c in ran if "--out" in c]
    assert predictions and all((clone / p).is_file() for p in predictions)


@pytest.mark.slow
@pytest.mark.xdist_group("demo_field_80")
def test_the_readme_positions_name_a_star_of_the_demo_field(demo_field_80, tmp_path, capsys):
    """The README's --ra/--dec examples (degrees, and the two sexagesimal spellings of the same place) classify a
    star of the demo sky's full-size field 80, which simulating field 80 alone reproduces. The scripts run in this
    process (``run_script_here``): the README-commands test runs predict.py's --ra/--dec lines themselves."""
    from astropy.coordinates import SkyCoord

    lines = [c for c in readme_commands((ROOT / "README.md").read_text(encoding="utf-8")) if "--ra" in c]
    places = []
    for line in lines:
        words = shlex.split(line)
        ra, dec = words[words.index("--ra") + 1], words[words.index("--dec") + 1]
        unit = ("deg", "deg") if ":" not in ra and "h" not in ra else ("hourangle", "deg")
        places.append(SkyCoord(ra, dec, unit=unit))
    assert len(places) == 3 and max(places[0].separation(p).arcsec for p in places) < 0.5  # 1e-4 deg is 0.36"
    data = str(tmp_path / "data")
    shutil.copytree(demo_field_80.root, data)  # 00_download.py --source simulated --fields 80
    for script, *args in (
        ("01_alignment.py", "--fields", "80", "--no-reports"),
        ("predict.py", "--field", "80", "--ra", f"{places[0].ra.deg}", "--dec", f"{places[0].dec.deg}"),
    ):
        proc = run_script_here(ROOT / "code" / script, ["--data-dir", data, "-q", *args], capsys)
        assert proc.returncode == 0, proc.stderr
    assert "1 classified (1 star, 0 galaxy)" in proc.stdout, proc.stdout
