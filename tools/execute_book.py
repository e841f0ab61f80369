"""Execute every notebook of the book at full size, two at a time, into the site build's execution cache.

    python -m tools.execute_book [--jobs N]

The site build (``jupyter-book build``, ``execute_notebooks: cache`` in ``_config.yml``) then takes each
notebook's outputs from that cache instead of running the notebooks one after the other. The cache is
jupyter-cache's (the one myst-nb reads), filled by its own parallel executor; each notebook runs in its own
folder, as in a serial build. A notebook whose code changed since it was cached runs again, so a rebuild
after editing one chapter executes only that chapter. ``tools/build-book.sh`` empties the cache first: the
published site is always executed from scratch.

Why: the notebooks spend much of their time waiting (Flower processes, kernel start-up, single-threaded
Python), so two at a time on two cores finish the build well within its 15-minute budget.
"""

from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import sys
import time

import yaml

from tools.site import ROOT, notebooks


def cache_path() -> pathlib.Path:
    """The execution cache the site build reads (``execute.cache`` in ``_config.yml``)."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    return ROOT / config["execute"]["cache"]


def execute(paths: list[pathlib.Path], *, cache_dir: pathlib.Path, jobs: int, timeout: int) -> int:
    """Run the notebooks of ``paths`` not yet in the cache at ``cache_dir`` (after ``build-book.sh``
    emptied it: all of them), ``jobs`` at a time; returns 1 if one failed (its traceback is printed)."""
    from jupyter_cache import get_cache
    from jupyter_cache.executors.basic import ExecutionWorkerLocalMProc, ProcessData
    from jupyter_cache.cache.db import NbProjectRecord

    cache = get_cache(str(cache_dir))
    uris = [str(p.resolve()) for p in paths]
    for path in uris:
        cache.add_nb_to_project(path)
    pending = cache.list_unexecuted(filter_uris=uris)
    NbProjectRecord.remove_tracebacks([r.pk for r in pending], cache.db)
    start = time.perf_counter()
    # jupyter-cache's own worker (execute in the notebook's folder, then cache the outputs); our pool, so
    # that the number of workers is chosen and each notebook is handed out as soon as a worker is free
    with multiprocessing.Pool(jobs) as pool:
        results = pool.map(ExecutionWorkerLocalMProc(),
                           [ProcessData(r.pk, r.uri, cache, timeout, False) for r in pending], chunksize=1)
    wall = time.perf_counter() - start
    seconds = {r.uri: r.data.get("execution_seconds") or 0.0 for r in cache.list_cache_records()}
    failed = [uri for status, uri in results if status != 0]
    for path in uris:
        shown = "   failed" if path in failed else f"{seconds[path]:7.1f} s" if path in seconds else "        ?"
        print(f"{shown}  {path}")
    print(f"executed {len(pending) - len(failed)}/{len(pending)} notebooks in {wall:.0f} s of wall time "
          f"({sum(seconds.get(r.uri, 0.0) for r in pending):.0f} s of notebook time, {jobs} at a time); "
          f"{len(uris) - len(pending)} already cached")
    for uri in failed:
        record = cache.get_project_record(uri)
        print(f"\n{uri} failed:\n{record.traceback or '(no traceback)'}",
              file=sys.stderr)
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at the same time (default 2)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (as the site build's)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    sys.exit(execute(notebooks(), cache_dir=cache_path(), jobs=args.jobs, timeout=args.timeout))


if __name__ == "__main__":
    main()
