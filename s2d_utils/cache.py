"""A SQLite store of generated samples: one row per (model, prompt, sampling parameters, sample).

A rerun, or a run resumed after a kill, regenerates nothing it already has: `generate` writes
each batch in one transaction, so a killed run loses at most the batch in flight. WAL mode keeps
readers (a notebook, a test) and the writer from blocking each other.

A file that is not an s2d cache (corrupt, foreign SQLite, another schema version) raises
`CacheError` naming the file; it is never silently read or overwritten.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

MAGIC = "s2d-generation-cache"
SCHEMA_VERSION = 1


class CacheError(RuntimeError):
    """The cache file cannot be used (corrupt, foreign, or from another schema version)."""


@dataclass(frozen=True)
class CachedSample:
    """One stored completion."""

    text: str
    n_tokens: int
    finish_reason: str
    # the model's log-probability (temperature 1) of the generated tokens, the stop token included
    # when it stopped there; None where the backend gave none (a server) or the sample predates it
    logprob: float | None = field(default=None, compare=False)


def sample_key(fingerprint: str, rendered_prompt: str, params: Mapping[str, object], index: int) -> str:
    """sha256 over everything that determines a sample: model, exact prompt, sampling, index."""
    payload = json.dumps(
        {"model": fingerprint, "prompt": rendered_prompt, "params": dict(sorted(params.items())), "index": index},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class GenerationCache:
    """SQLite-backed map from `sample_key` to `CachedSample`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            raise CacheError(f"{self.path}: not a readable SQLite file ({err}); move it away to start a new cache") from err
        if not tables:
            with self._db:
                self._db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._db.execute(
                    "CREATE TABLE samples (key TEXT PRIMARY KEY, text TEXT NOT NULL, n_tokens INTEGER NOT NULL,"
                    " finish_reason TEXT NOT NULL, created REAL NOT NULL, logprob REAL)"
                )
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)", [("magic", MAGIC), ("schema_version", str(SCHEMA_VERSION))]
                )
            return
        meta = dict(self._db.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        if meta.get("magic") != MAGIC or "samples" not in tables:
            raise CacheError(f"{self.path}: a SQLite file, but not an s2d generation cache; refusing to use it")
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise CacheError(
                f"{self.path}: cache schema version {meta.get('schema_version')!r}, this code reads {SCHEMA_VERSION}"
            )
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(samples)")}
        if "logprob" not in columns:  # a cache from before log-probabilities: its samples read as None
            with self._db:
                self._db.execute("ALTER TABLE samples ADD COLUMN logprob REAL")

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedSample]:
        """Return the stored samples among ``keys`` (missing keys are absent from the result)."""
        keys = list(keys)
        found: dict[str, CachedSample] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT key, text, n_tokens, finish_reason, logprob FROM samples WHERE key IN ({marks})", chunk
            )
            for key, text, n_tokens, finish, logprob in rows:
                found[key] = CachedSample(text, int(n_tokens), finish, None if logprob is None else float(logprob))
        return found

    def put_many(self, items: Mapping[str, CachedSample]) -> None:
        """Store a batch of samples in one transaction (all or nothing)."""
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO samples (key, text, n_tokens, finish_reason, created, logprob)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(k, s.text, s.n_tokens, s.finish_reason, now, s.logprob) for k, s in items.items()],
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "GenerationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
