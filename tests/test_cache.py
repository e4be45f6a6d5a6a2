import sqlite3

import pytest

from s2d_utils.cache import CachedSample, CacheError, GenerationCache, sample_key


def test_roundtrip_and_persistence(tmp_path):
    path = tmp_path / "c.sqlite"
    with GenerationCache(path) as c:
        c.put_many({"k1": CachedSample("hello", 2, "stop"), "k2": CachedSample("x", 1, "length")})
        assert len(c) == 2
    with GenerationCache(path) as c:
        assert c.get_many(["k1", "k3"]) == {"k1": CachedSample("hello", 2, "stop")}


def test_key_depends_on_everything_that_determines_a_sample():
    base = sample_key("model", "prompt", {"temperature": 0.7, "top_p": 0.95}, 0)
    assert base == sample_key("model", "prompt", {"top_p": 0.95, "temperature": 0.7}, 0)  # order-free
    others = [sample_key("model2", "prompt", {"temperature": 0.7, "top_p": 0.95}, 0),
              sample_key("model", "prompt ", {"temperature": 0.7, "top_p": 0.95}, 0),
              sample_key("model", "prompt", {"temperature": 0.8, "top_p": 0.95}, 0),
              sample_key("model", "prompt", {"temperature": 0.7, "top_p": 0.95}, 1)]
    assert len({base, *others}) == 5


def test_corrupt_file_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CacheError, match="junk.sqlite: not a readable SQLite file"):
        GenerationCache(bad)
    assert bad.read_bytes().startswith(b"this is not")  # never overwritten


def _execute(path, *statements: str) -> None:
    """Run ``statements`` on the SQLite file ``path`` and commit (a file made by hand)."""
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def test_foreign_sqlite_and_other_versions_are_refused(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    _execute(foreign, "CREATE TABLE people (name TEXT)")
    with pytest.raises(CacheError, match="foreign.sqlite: a SQLite file, but not an s2d generation cache"):
        GenerationCache(foreign)
    newer = tmp_path / "newer.sqlite"
    GenerationCache(newer).close()
    _execute(newer, "UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(CacheError, match="schema version '99'"):
        GenerationCache(newer)


def test_log_probabilities_round_trip_and_an_older_cache_gains_the_column(tmp_path):
    """A cache written before samples carried log-probabilities opens, its samples read with
    logprob None (the confidence then falls back to a forward pass), and new ones store theirs."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("CREATE TABLE samples (key TEXT PRIMARY KEY, text TEXT NOT NULL, n_tokens INTEGER NOT NULL,"
               " finish_reason TEXT NOT NULL, created REAL NOT NULL)")
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("magic", "s2d-generation-cache"), ("schema_version", "1")])
    db.execute("INSERT INTO samples VALUES ('old', 'hello', 2, 'stop', 0)")
    db.commit()
    db.close()
    with GenerationCache(path) as c:
        assert c.get_many(["old"])["old"].logprob is None
        c.put_many({"new": CachedSample("x", 1, "length", -1.25)})
    with GenerationCache(path) as c:
        got = c.get_many(["old", "new"])
    assert got == {"old": CachedSample("hello", 2, "stop"), "new": CachedSample("x", 1, "length")}
    assert (got["old"].logprob, got["new"].logprob) == (None, -1.25)  # (not part of a sample's equality)
