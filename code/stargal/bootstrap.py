"""The first import of every script in code/: make sure the script runs with a Python that has our dependencies.

Standard library only, and nothing else of the package is imported here, so it works under any ``python3``.
When a third-party dependency is missing (the script was started as ``code/00_download.py`` or
``python3 code/00_download.py`` with the system Python), the script is started again, with the same
arguments, by the project's environment (``$STARGAL_VENV`` or ``.venv`` beside ``code/``) when it exists;
otherwise, or if that environment lacks them too, one line says what to do and the exit status is 2.
"""

import importlib.util
import os
import sys

# Top-level modules every script needs (import names, not package names).
REQUIRED = ("numpy", "scipy", "astropy", "matplotlib", "requests", "psutil", "tqdm", "PIL")
_RERUN_FLAG = "STARGAL_BOOTSTRAPPED"

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def missing_modules(names=REQUIRED) -> list:
    """The modules of ``names`` this Python cannot import (found without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def environment_python() -> str:
    """The project environment's Python: ``$STARGAL_VENV/bin/python`` or ``<project>/.venv/bin/python``."""
    venv = os.environ.get("STARGAL_VENV") or os.path.join(PROJECT_ROOT, ".venv")
    return os.path.join(venv, "bin", "python")


def ensure_dependencies() -> None:
    """Return if the dependencies import; else re-run this script with the project's Python, or exit 2."""
    missing = missing_modules()
    if not missing:
        return
    python = environment_python()
    script = sys.argv[0] if sys.argv else ""
    if (
        os.environ.get(_RERUN_FLAG) != "1"
        and script.endswith(".py")
        and os.path.isfile(script)
        and os.access(python, os.X_OK)
    ):
        os.environ[_RERUN_FLAG] = "1"  # never loops: the re-run Python stops below if it lacks them too
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(python, [python, *sys.argv])
    prog = os.path.basename(script) or "stargal"
    print(
        f"{prog}: missing dependencies ({', '.join(missing)}) in {sys.executable}; run ./run_scripts.sh --help "
        "once to set up .venv, or start the script with .venv/bin/python",
        file=sys.stderr,
    )
    sys.exit(2)


def _interrupted_while_starting(signum, frame) -> None:
    import signal

    # a stop sent to the process group and passed on by the runner arrives twice: one line, one exit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "stargal"
    print(f"{prog}: {'terminated' if signum == signal.SIGTERM else 'interrupted'}", file=sys.stderr)
    raise SystemExit(128 + signum)


def quiet_interrupt_while_starting() -> None:
    """Ctrl-C or SIGTERM while a script still imports its libraries (a second or more): one line and exit status
    130 or 143, as later, instead of a traceback from inside an import or a silent end; ``cli.run_main`` puts its
    own handlers in before the script's work starts, so that stopped work unwinds and cleans up as it should."""
    import signal

    main = sys.modules.get("__main__")
    script = os.path.abspath(getattr(main, "__file__", None) or os.devnull)
    ours = getattr(main, "__name__", "") == "__main__" and script.startswith(os.path.join(PROJECT_ROOT, ""))
    if ours and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not in a worker, nor when ignored
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    if ours and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupted_while_starting)


ensure_dependencies()
quiet_interrupt_while_starting()
