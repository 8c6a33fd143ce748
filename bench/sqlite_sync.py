"""Commits per second on SQLite in WAL mode with synchronous=FULL (Telecare's setting) against NORMAL: one
small audit-sized row per committed transaction, sequentially, on a file in the data directory's file
system. The ratio is what NORMAL would buy; docs/performance.md#sqlite says why Telecare keeps FULL.

    .venv/bin/python bench/sqlite_sync.py [--n 2000] [--dir /path/on/the/data/disk]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time


def commits_per_second(path: str, synchronous: str, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, at TEXT, detail TEXT)")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (at, detail) VALUES (?, ?)", (str(time.time()), "x" * 200 + str(i)))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--dir", default=os.environ.get("TELECARE_DATA_DIR") or None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        full = commits_per_second(os.path.join(tmp, "full.db"), "FULL", args.n)
        normal = commits_per_second(os.path.join(tmp, "normal.db"), "NORMAL", args.n)
    print(f"SQLite WAL, {args.n} sequential one-row commits")
    print(f"synchronous=FULL    {full:10,.0f} commits/s")
    print(f"synchronous=NORMAL  {normal:10,.0f} commits/s   NORMAL / FULL: {normal / full:.1f}x")


if __name__ == "__main__":
    main()
