"""Per-scenario PostgreSQL counters of the bench database (``pg_stat_database``): how many
transactions and new connections each request cost. Cheap, and true for any code path."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

_QUERY = """
SELECT xact_commit + xact_rollback, sessions, tup_returned + tup_fetched,
       tup_inserted + tup_updated + tup_deleted
FROM pg_stat_database WHERE datname = current_database()
"""
_TABLES = """
SELECT relname, seq_scan, seq_tup_read, 0, 0 FROM pg_stat_user_tables
UNION ALL
SELECT relname || '.' || indexrelname, 0, 0, idx_scan, idx_tup_read FROM pg_stat_user_indexes
"""
#: Backends publish their counters when idle, at most once a second.
FLUSH_WAIT_SECONDS = 1.1


@dataclass(frozen=True)
class DbCounters:
    transactions: int
    sessions: int
    rows_read: int
    rows_written: int
    #: table -> (sequential scans, rows they read, 0, 0);
    #: "table.index" -> (0, 0, index scans, index entries they read)
    tables: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


#: How often :func:`analyzing` refreshes the statistics while a scenario runs.
ANALYZE_EVERY_SECONDS = 5.0


@contextlib.asynccontextmanager
async def analyzing(url: str, every: float = ANALYZE_EVERY_SECONDS) -> AsyncIterator[None]:
    """Keep the planner's statistics fresh while the block runs, as autovacuum's analyze keeps
    a production database's: the bench fills tables from empty within seconds (far faster than
    autovacuum's once-a-minute look, and some servers run with it off). Plans made for an empty
    table scan it whole once it holds thousands of rows (``identities`` read row by row,
    ``status = 'verified'`` read every verified verification); a production table grows by a
    small fraction between two analyses."""
    # One connection for the whole block, opened before it: not a new session in its counters.
    conn = await asyncpg.connect(url, timeout=10)
    await conn.execute("ANALYZE")

    async def keep() -> None:
        while True:
            await asyncio.sleep(every)
            await conn.execute("ANALYZE")

    task = asyncio.create_task(keep())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await conn.close()


async def snapshot(url: str) -> DbCounters:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(_QUERY)
        if row is None:
            raise RuntimeError("pg_stat_database has no row for this database")
        tables = {
            r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in await conn.fetch(_TABLES)
        }
    finally:
        await conn.close()
    transactions, sessions, read, written = (int(v or 0) for v in row)
    return DbCounters(transactions, sessions, read, written, tables)


@dataclass(frozen=True)
class DbCost:
    """Database work per successful request over a run."""

    transactions_per_request: float
    new_connections_per_1k: float
    rows_read_per_request: float
    rows_written_per_request: float
    #: Where the most rows were read: "table (seq)" or "table.index" -> (scans, rows) / request.
    top_reads_per_request: dict[str, tuple[float, float]] = field(default_factory=dict)


def per_request(before: DbCounters, after: DbCounters, requests: int) -> DbCost | None:
    if requests <= 0:
        return None
    # Our two snapshot connections are a session and a transaction each.
    return DbCost(
        transactions_per_request=round(
            (after.transactions - before.transactions - 2) / requests, 2
        ),
        new_connections_per_1k=round(1000 * (after.sessions - before.sessions - 1) / requests, 1),
        rows_read_per_request=round((after.rows_read - before.rows_read) / requests, 1),
        rows_written_per_request=round((after.rows_written - before.rows_written) / requests, 1),
        top_reads_per_request=_top_reads(before, after, requests),
    )


def _top_reads(
    before: DbCounters, after: DbCounters, requests: int, top: int = 3
) -> dict[str, tuple[float, float]]:
    deltas = []
    for name, (seq, seq_rows, idx, idx_rows) in after.tables.items():
        b_seq, b_seq_rows, b_idx, b_idx_rows = before.tables.get(name, (0, 0, 0, 0))
        if seq_rows - b_seq_rows > 0:
            deltas.append((seq_rows - b_seq_rows, seq - b_seq, f"{name} (seq)"))
        if idx_rows - b_idx_rows > 0:
            deltas.append((idx_rows - b_idx_rows, idx - b_idx, name))
    deltas.sort(reverse=True)
    return {
        table: (round(scans / requests, 2), round(rows / requests, 1))
        for rows, scans, table in deltas[:top]
    }


async def settle() -> None:
    await asyncio.sleep(FLUSH_WAIT_SECONDS)
