"""SQLite results store: one row per record, keyed by a hash of the canonical specs.

Each record is written in its own transaction the moment it is finished, so a killed run loses
only work in flight and a re-run skips every key already present.

A database has a secret **salt**, drawn from the operating system when the database is created and
kept in a file beside it (``<db>.salt``, mode 0600). Keys, data splits and target draws derive from
it (so no plugin can re-derive the owner's key from the published plan seed), and every record
carries an HMAC made with it: a record that someone other than the driver wrote (a plugin that
opened the file) does not verify, is ignored by aggregation and is re-run. The salt never enters a
record, a log or the leaderboard; ``--salt-file`` lets two machines share one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from disguisebench.errors import Name, PluginError

log = logging.getLogger("disguisebench")

SCHEMA_VERSION = 2
DEFAULT_DB = Path("results") / "disguisebench.db"
SALT_BYTES = 32



class Status(Name):
    """A record's outcome. Members are strings; the database stores the values."""

    OK = "ok"
    FAILED = "failed"
    # The attack cannot apply to the defense, or the level lacks a capability it needs.
    NOT_APPLICABLE = "not-applicable"
    # The defense raised or returned invalid output while an attack used it (its keyless clone,
    # a re-fit under the attacker's key, the oracle): it refused to be evaluated, which the
    # leaderboard scores as a complete break of that attack (advantage 1), the reason shown.
    REFUSED = "refused"


OK = Status.OK
FAILED = Status.FAILED
NOT_APPLICABLE = Status.NOT_APPLICABLE
REFUSED = Status.REFUSED
STATUSES = tuple(Status)


# MIGRATIONS[v] upgrades a database of schema version v to v + 1, in one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    # Version 2 signs records; rows written before have no signature and are re-run.
    1: lambda db: db.execute("ALTER TABLE records ADD COLUMN mac TEXT"),
}


def salt_path(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".salt")


def read_salt(path: str | Path) -> bytes:
    path = Path(path)
    try:
        text = path.read_text().strip()
        salt = bytes.fromhex(text)
    except (OSError, ValueError) as err:
        raise StoreError(f"salt file {str(path)!r} is not readable as hex ({err})") from None
    if len(salt) < 16:
        raise StoreError(f"salt file {str(path)!r} holds {len(salt)} bytes; expected at least 16")
    return salt


def create_salt(path: str | Path) -> bytes:
    """A new salt from the operating system's randomness, written to a new file with mode 0600."""
    salt = secrets.token_bytes(SALT_BYTES)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(salt.hex() + "\n")
    return salt


def derive_key(salt: bytes, purpose: str) -> bytes:
    """A key for one purpose (signing records, the model cache) derived from the salt."""
    return hmac.new(salt, purpose.encode(), hashlib.sha256).digest()


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
    """A results database and its salt.

    Args:
        path: the SQLite file.
        salt_file: where the salt lives (default ``<path>.salt``).
        create_salt: draw a salt when the file is missing (running); when False (reading a
            database someone published without its salt) records are read unverified.
    """

    def __init__(self, path: str | Path = DEFAULT_DB, *, salt_file: str | Path | None = None,
                 create_salt: bool = True) -> None:
        self.path = Path(path)
        self.salt_file = salt_path(self.path) if salt_file is None else Path(salt_file)
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
        self._salt = self._open_salt(create_salt)
        self._mac_key = None if self._salt is None else derive_key(self._salt, "records")

    def _open_salt(self, create: bool) -> bytes | None:
        stored = self._db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
        if self.salt_file.is_file():
            salt = read_salt(self.salt_file)
        elif create and stored is None:
            salt = create_salt(self.salt_file)
        elif create:
            raise StoreError(
                f"results database {str(self.path)!r} was made with a salt that is not at "
                f"{str(self.salt_file)!r}; pass its --salt-file, or use a new --db"
            )
        else:
            return None
        fingerprint = self.fingerprint_of(salt)
        if stored is None:
            with self._db:
                self._db.execute("INSERT INTO meta VALUES ('salt', ?)", (fingerprint,))
        elif stored[0] != fingerprint:
            raise StoreError(
                f"salt file {str(self.salt_file)!r} is not the salt results database "
                f"{str(self.path)!r} was made with; pass the right --salt-file, or use a new --db"
            )
        return salt

    @staticmethod
    def fingerprint_of(salt: bytes) -> str:
        """A public name for a salt (an HMAC of a constant); never the salt itself."""
        return derive_key(salt, "fingerprint").hex()[:16]

    @property
    def salt(self) -> bytes:
        """The secret salt; only the driver holds it."""
        if self._salt is None:
            raise StoreError(f"results database {str(self.path)!r} has no salt file at "
                             f"{str(self.salt_file)!r}: it can be read, not run")
        return self._salt

    @property
    def verified(self) -> bool:
        return self._mac_key is not None

    def protected_paths(self) -> list[str]:
        """What plugin processes may not touch: the database, its salt, models and artifacts."""
        base = str(self.path)
        return [base, base + "-wal", base + "-shm", base + "-journal", str(self.salt_file),
                str(self.path.parent / "models"), str(self.artifacts_dir)]

    def _mac(self, values: list[Any]) -> str:
        text = json.dumps(values, sort_keys=True, separators=(",", ":"))
        return hmac.new(self._mac_key, text.encode(), hashlib.sha256).hexdigest()

    def _valid(self, values: list[Any], mac: str | None) -> bool:
        if self._mac_key is None:
            return True
        return mac is not None and hmac.compare_digest(self._mac(values), mac)

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
                    created REAL NOT NULL, mac TEXT)"""
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")

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

    def _rows(self) -> Iterator[tuple[list[Any], bool]]:
        cursor = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)}, mac FROM records ORDER BY created, key")
        for row in cursor:
            values = list(row[:-1])
            yield values, self._valid(values, row[-1])

    def unverified(self) -> int:
        """Records whose signature does not verify (written by someone other than a driver)."""
        return sum(not ok for _, ok in self._rows())

    def keys(self) -> set[str]:
        """Keys of the verified records: anything else is re-run."""
        return {values[0] for values, ok in self._rows() if ok}

    def add(self, record: Record) -> None:
        """Write one record in its own transaction; a verified record of the same key stays."""
        if record.status not in STATUSES:
            raise StoreError(f"record status {record.status!r} is not one of {', '.join(STATUSES)}")
        if self._mac_key is None:
            raise StoreError(f"results database {str(self.path)!r} was opened without its salt; "
                             "records cannot be signed")
        row = dataclasses.asdict(record)
        row["created"] = time.time()
        values = [json.dumps(row[c], sort_keys=True) if c in _JSON else row[c] for c in _COLUMNS]
        with self._db:
            old = self._db.execute(f"SELECT {', '.join(_COLUMNS)}, mac FROM records WHERE key = ?",
                                   (record.key,)).fetchone()
            if old is not None and self._valid(list(old[:-1]), old[-1]):
                return
            self._db.execute(
                f"INSERT OR REPLACE INTO records ({', '.join(_COLUMNS)}, mac) "
                f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
                values + [self._mac(values)],
            )

    def delete_failed(self) -> int:
        with self._db:
            return self._db.execute("DELETE FROM records WHERE status = ?", (FAILED,)).rowcount

    def records(self) -> Iterator[Record]:
        """Every verified record (every record when the salt is not at hand)."""
        skipped = 0
        for values, ok in self._rows():
            if not ok:
                skipped += 1
                continue
            row = dict(zip(_COLUMNS, values))
            row.pop("created")
            for c in _JSON:
                row[c] = json.loads(row[c]) if row[c] is not None else None
            yield Record(**row)
        if skipped:
            log.warning("%d record(s) in %s carry no valid signature (written before records "
                        "were signed, or by something other than the driver) and are ignored",
                        skipped, self.path)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
