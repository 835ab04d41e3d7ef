#!/usr/bin/env python3
"""Stage 00: fetch SDSS frames, irg jpegs and sweep catalogs into data/sas/ (SAS layout), verified.

Examples::

    00_download.py                                   # the reference fields from the SDSS SAS
    00_download.py --source https://mirror.example.org/sas/dr17/eboss/ --fields 80
    00_download.py --source ~/old-project/data       # reference bundle, SAS tree or any folder of SAS files
    00_download.py --source simulated --sim-shape 400 600 --fields 80-83
    00_download.py --fields 1-1000 --scheduler tcp://head:8786   # field by field on a Dask cluster

Reruns skip complete files (recorded in data/sas/manifest.json; from a local --source, only those that folder
holds with the same content, so files another folder left are copied again); --force refetches. Partial files are
resumed. Without a readable manifest, the files already in the data folder are verified and kept when whole (a
real sky's from an http source; from a local folder, those it holds unchanged). A file that is not its name's
(a frame's header, a sweep's run/camcol/rerun/kind) or an HTML page served in its place fails at once, naming it. Exit status 0 when every file is complete, 1 when some failed (each is named), 2 on bad arguments.
"""

from __future__ import annotations

import stargal.bootstrap  # noqa: F401  (first: without our dependencies, re-run with .venv or say what to do)

# isort: split

import argparse

from stargal import cli
from stargal.config import BANDS, SEEING_DRAWS
from stargal.download import HttpSettings
from stargal.errors import StargalError

MAX_SECONDS = 3600.0  # a timeout or retry delay longer than an hour is a typo (and inf overflows the clock)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_SECONDS:g} seconds: {text!r}")
    return value


def _retries(text: str) -> int:
    return cli.non_negative_int(text)


def build_parser():
    parser = cli.make_parser(
        __doc__.split("\n\n")[0],
        workers=True,
        workers_default=4,  # downloads wait on the network, not on the cores
        workers_help="parallel downloads (threads)",
        scheduler_help="fetch (or simulate) the files field by field on this existing Dask cluster (e.g. "
        "tcp://head:8786, or a scheduler file) instead of local threads; the data folder, and a local --source, "
        "must be on a filesystem every worker shares",
    )
    group = parser.add_argument_group("download")
    group.add_argument(
        "--source", default="sdss",
        help="sdss (the SDSS SAS), an http(s):// mirror base URL, a local folder, or simulated",
    )  # fmt: skip
    group.add_argument("--frames-only", action="store_true", help="skip the run/camcol's sweep catalogs")
    group.add_argument(
        "--verify", action="store_true",
        help="re-hash complete files against the manifest (and read each sweep's run/camcol/rerun/kind against its "
        "name and rerun); refetch any that differ",
    )  # fmt: skip
    group.add_argument("--bands", default="".join(BANDS), help="frame bands to fetch")
    group.add_argument("--timeout", type=_seconds, default=60.0, metavar="S", help="read timeout (seconds)")
    group.add_argument("--connect-timeout", type=_seconds, default=10.0, metavar="S", help="connect timeout")
    group.add_argument("--retries", type=_retries, default=5, help="retries per file after a failure")
    group.add_argument("--backoff", type=_seconds, default=1.0, metavar="S", help="first retry delay (doubles)")
    group.add_argument(
        "--sim-shape", type=cli.positive_int, nargs=2, default=None, metavar=("ROWS", "COLS"),
        help="frame shape of --source simulated (real frames: 1489 2048); a shape whose rendering would not fit in "
        "the memory available (about 200 bytes a pixel) is refused",
    )  # fmt: skip
    group.add_argument(
        "--sim-seeing", choices=SEEING_DRAWS, default=None,
        help="how --source simulated draws each field's seeing: sample (the real sample fields' good seeing; "
        "the default), survey (the survey's distribution, median PSF width 1.43\") or mixed (odd fields survey, "
        "even ones sample)",
    )  # fmt: skip
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.quiet, args.verbose)
    from stargal.stages.download import DownloadOptions, checked_request, run_download

    if args.sim_shape is not None and args.source != "simulated":
        raise StargalError("--sim-shape: only with --source simulated")
    if args.sim_seeing is not None and args.source != "simulated":
        raise StargalError("--sim-seeing: only with --source simulated")
    http = HttpSettings(
        connect_timeout=args.connect_timeout, read_timeout=args.timeout, retries=args.retries, backoff=args.backoff
    )
    options = DownloadOptions(
        source=args.source, bands=tuple(args.bands), frames_only=args.frames_only, force=args.force, verify_existing=args.verify,
        workers=args.workers, http=http, seed=args.seed, scheduler=args.scheduler,
        **({"sim_shape": tuple(args.sim_shape)} if args.sim_shape else {}),
        **({"sim_seeing": args.sim_seeing} if args.sim_seeing else {}),
    )  # fmt: skip
    fs = cli.field_set(args)
    checked_request(options)  # before the data folder is made: a refused request leaves none behind
    summary = run_download(cli.open_data_folder(args), fs, options)
    for line in summary.lines():
        print(line)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    cli.run_main(main)
