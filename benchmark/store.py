"""SQLite results store: one row per record, keyed by a hash of the canonical specs.

Each record is written in its own transaction the moment it is finished, so a killed run loses
only work in flight and a re-run skips every key already present.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmark.errors import PluginError

SCHEMA_VERSION = 1
DEFAULT_DB = Path("results") / "disguisebench.db"

OK = "ok"
FAILED = "failed"
NOT_APPLICABLE = "not-applicable"
STATUSES = (OK, FAILED, NOT_APPLICABLE)


# MIGRATIONS[v] upgrades a database of schema version v to v + 1, in one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}


class StoreError(PluginError):
    """The results database cannot be opened or is of an unknown schema."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One result: the utility row of a cell (attack and level None) or one attack at one level."""

    key: str
    task: dict[str, Any]
    defense: dict[str, Any]
    attack: dict[str, Any] | None
    level: str | None
    seed: int
    status: str
    metrics: dict[str, float]
    meta: dict[str, Any]
    goal: str | None = None
    error: str | None = None

    @property
    def task_name(self) -> str:
        return self.task["name"]

    @property
    def attack_name(self) -> str | None:
        return None if self.attack is None else self.attack["name"]


_COLUMNS = ("key", "task", "defense", "attack", "level", "seed", "status", "goal",
            "metrics", "meta", "error", "created")
_JSON = ("task", "defense", "attack", "metrics", "meta")


class Store:
    def __init__(self, path: str | Path = DEFAULT_DB) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._init_schema()
        except sqlite3.DatabaseError as err:
            raise StoreError(
                f"results database {str(self.path)!r} is not a readable SQLite file ({err}); "
                "move it aside or pass another --db"
            ) from None

    def _init_schema(self) -> None:
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL)")
            row = self._db.execute("SELECT version FROM schema").fetchone()
            if row is None:
                self._db.execute("INSERT INTO schema VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"results database {str(self.path)!r} has schema version {row[0]}, newer than "
                    f"this DisguiseBench understands ({SCHEMA_VERSION}); upgrade disguisebench"
                )
            elif row[0] < SCHEMA_VERSION:
                self._migrate(row[0])
            self._db.execute(
                """CREATE TABLE IF NOT EXISTS records (
                    key TEXT PRIMARY KEY, task TEXT NOT NULL, defense TEXT NOT NULL,
                    attack TEXT, level TEXT, seed INTEGER NOT NULL, status TEXT NOT NULL,
                    goal TEXT, metrics TEXT NOT NULL, meta TEXT NOT NULL, error TEXT,
                    created REAL NOT NULL)"""
            )

    def _migrate(self, version: int) -> None:
        """Apply MIGRATIONS from ``version`` up to SCHEMA_VERSION (inside the caller's transaction)."""
        for v in range(version, SCHEMA_VERSION):
            if v not in MIGRATIONS:
                raise StoreError(f"no migration from schema version {v} of {str(self.path)!r}")
            MIGRATIONS[v](self._db)
        self._db.execute("UPDATE schema SET version = ?", (SCHEMA_VERSION,))

    @property
    def schema_version(self) -> int:
        return self._db.execute("SELECT version FROM schema").fetchone()[0]

    @property
    def artifacts_dir(self) -> Path:
        """Where runs keep images for the leaderboard's gallery, next to the database."""
        return self.path.with_name(self.path.stem + "-artifacts")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def has(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM records WHERE key = ?", (key,)).fetchone() is not None

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM records")}

    def add(self, record: Record) -> None:
        """Write one record in its own transaction; a key already stored is left as it is."""
        if record.status not in STATUSES:
            raise StoreError(f"record status {record.status!r} is not one of {', '.join(STATUSES)}")
        row = dataclasses.asdict(record)
        row["created"] = time.time()
        values = [json.dumps(row[c], sort_keys=True) if c in _JSON else row[c] for c in _COLUMNS]
        with self._db:
            self._db.execute(
                f"INSERT OR IGNORE INTO records ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                values,
            )

    def delete_failed(self) -> int:
        with self._db:
            return self._db.execute("DELETE FROM records WHERE status = ?", (FAILED,)).rowcount

    def records(self) -> Iterator[Record]:
        cursor = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM records ORDER BY created, key")
        for values in cursor:
            row = dict(zip(_COLUMNS, values))
            row.pop("created")
            for c in _JSON:
                row[c] = json.loads(row[c]) if row[c] is not None else None
            yield Record(**row)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
