"""`pgembed quickstart`, `pgembed stats` and `pgembed calibrate`."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from pgembed._cli.args import (
    check_writable,
    int_in,
    output_dir,
    output_file,
    positive_int,
    read_lines,
)
from pgembed.errors import ConfigError


def register(sub: Any) -> None:
    q = sub.add_parser(
        "quickstart",
        help="build a collection with every kind from a real corpus and measure each strategy",
        description="Start or reuse the database, export the default model if needed, ingest "
        "the Wikipedia sample shipped in gensim (every vector kind) and search it with every "
        "strategy, using each article's lead sentence as a known-item query.",
    )
    q.add_argument(
        "--articles", type=positive_int, help="limit the number of articles (default: all)"
    )
    q.add_argument("--out", type=output_dir, default=Path("quickstart-out"),
                   help="PNG and JSON here")  # fmt: skip
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_quickstart)

    s = sub.add_parser("stats", help="health report of a collection")
    s.add_argument("collection")
    s.add_argument("--sample", type=int_in(1, 10**6), default=100, help="rows used as queries")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_stats)

    c = sub.add_parser(
        "calibrate",
        help="measure recall and time of each search setting, for target_recall",
        description="Measure, for each strategy the collection stores, recall@k against exact "
        "search and database time per query over a grid of settings (knn: ef_search; "
        "funnel: prefix x oversample; binary: oversample, and probes under IVFFlat; "
        "multivector: FDE candidates), and record them in pgembed.calibrations. Searches "
        "given --target-recall then run the cheapest setting that meets it.",
    )
    c.add_argument("collection")
    c.add_argument("--sample", type=int_in(1, 100_000), default=100,
                   help="stored rows drawn as queries (default 100)")  # fmt: skip
    c.add_argument("--queries", help="a file of query texts, one per line (- for stdin), "
                   "instead of stored rows")  # fmt: skip
    c.add_argument("-k", type=int_in(1, 100_000), default=10, help="recall@k (default 10)")
    c.add_argument("--seed", type=int_in(0), default=0, help="of the sample (default 0)")
    c.add_argument("--strategy", action="append", dest="strategies",
                   choices=("knn", "funnel", "binary", "multivector"),
                   help="calibrate only these (repeatable; default: every one stored)")  # fmt: skip
    c.add_argument("--plot", type=output_file, help="write a PNG of recall against time per "
                   "strategy (a directory: <collection>-calibration.png in it)")  # fmt: skip
    c.add_argument("--json", action="store_true", help="print the measurements as JSON")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=_calibrate)


def _quickstart(args: argparse.Namespace) -> int:
    from pgembed import quickstart

    check_writable(args.out, "--out", directory=True)  # before the download and the runs
    results = quickstart.run(
        max_articles=args.articles, out_dir=args.out, progress=not args.no_progress
    )
    print(quickstart.format_table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quickstart.json").write_text(json.dumps(quickstart.as_dicts(results), indent=1))
    print(f"plot: {args.out / 'quickstart.png'}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from pgembed import Collection, db, stats

    st = stats.collect(Collection.open(db.create_engine(), args.collection), sample=args.sample)
    print(json.dumps(st.as_dict()) if args.json else stats.format_stats(st))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from pgembed import Collection, calibration, db

    queries = read_lines(args.queries, "queries") if args.queries else None
    # checked before the (slow) calibration, which is saved before the plot is drawn
    target = plot_target(args.plot, args.collection) if args.plot else None
    coll = Collection.open(db.create_engine(), args.collection)
    cal = coll.calibrate(
        sample=args.sample, queries=queries, k=args.k, seed=args.seed,
        progress=False if args.no_progress else None, strategies=args.strategies,
    )  # fmt: skip
    print(json.dumps(cal.as_dict()) if args.json else calibration.format_calibration(cal))
    if target is not None:
        try:
            written = calibration.plot(cal, target)
        except OSError as exc:
            raise ConfigError(
                f"the calibration is saved, but the plot could not be written to {target}: "
                f"{exc.strerror or exc}; run calibrate again with a writable --plot path"
            ) from None
        print(f"plot: {written}")
    return 0


def plot_target(path: Path, collection: str) -> Path:
    """The PNG that ``--plot PATH`` writes: PATH itself (``.png`` added when it has no
    suffix, as matplotlib would), or ``<collection>-calibration.png`` inside PATH when it
    is a directory. Refused unless writable, so that nothing fails after the calibration."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--plot needs matplotlib: pip install 'pgembed[quickstart]'")
    if path.is_dir():
        safe = re.sub(r"[^\w.-]+", "_", collection).strip(".") or "collection"
        path = path / f"{safe}-calibration.png"
    elif not path.suffix:
        path = path.with_name(path.name + ".png")
    return check_writable(path, "--plot")
