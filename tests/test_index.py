"""The fingerprint index at scale, on small data: snapshot round-trip, two shards answer like one,
a clip published by another process is found without a rebuild, and `credence index rebuild`
equals the incrementally kept index."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert

from credence.runtime import Runtime
from provenance.fingerprint import ALGORITHM, QUERY_VARIANTS, STORED_REGIONS, ClipFingerprint, QueryFingerprint
from provenance.index import FingerprintIndex, FingerprintMatch, shard_of
from provenance.index.shards import ShardedIndex, ShardUnavailable
from provenance.index.store import current_snapshot
from provenance.ledger.models import Fingerprint, Generation, mark_to_db

REGIONS = len(STORED_REGIONS)


def clip_fingerprint(rng: np.random.Generator, seconds: int) -> ClipFingerprint:
    """Random hashes: far apart (32 bits on average), so each query has exactly one true match."""
    return ClipFingerprint(rng.integers(0, 2**63, (seconds, REGIONS), dtype=np.uint64) * np.uint64(2),
                           rng.integers(0, 2**63, (seconds, REGIONS), dtype=np.uint64),
                           np.ones(seconds, dtype=bool))


def query_for(fp: ClipFingerprint, rng: np.random.Generator, *, flips: int = 3) -> QueryFingerprint:
    """A query whose window at s + 0.25 sees stored second s (region 0, a few bits off)."""
    samples = 4 * fp.seconds
    qp = rng.integers(0, 2**63, (samples, QUERY_VARIANTS), dtype=np.uint64)
    qd = rng.integers(0, 2**63, (samples, QUERY_VARIANTS), dtype=np.uint64)
    for s in range(fp.seconds):
        noise = np.uint64(sum(1 << int(b) for b in rng.choice(64, flips, replace=False)))
        qp[4 * s + 1, 0] = fp.phash[s, 0] ^ noise
        qd[4 * s + 1, 0] = fp.dhash[s, 0] ^ noise
    return QueryFingerprint(np.arange(samples) / 4, qp, qd, np.ones(samples, dtype=bool))


def publish_rows(database_url: str, fingerprints: list[ClipFingerprint]) -> list[str]:
    """Published generations with these fingerprints, written straight to the ledger tables."""
    from provenance.ledger import Ledger

    ledger = Ledger(database_url)
    ids = []
    try:
        with ledger.session() as s:
            for fp in fingerprints:
                gid = str(uuid.uuid4())
                prompt = f"index test {gid}"
                generation = {"id": gid, "mark_id": mark_to_db(int(uuid.uuid4().int >> 65)), "prompt": prompt,
                              "model": "test-index", "status": "published",
                              "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()}
                s.execute(insert(Generation.__table__), [generation])
                s.execute(insert(Fingerprint.__table__), [{
                    "generation_id": gid, "algorithm": ALGORITHM, "seconds": fp.seconds, "regions": REGIONS,
                    "hashes": fp.hashes_blob(), "informative": fp.informative_blob()}])
                ids.append(gid)
    finally:
        ledger.dispose()
    return ids


def run_cli(env: dict[str, str], *args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "credence", "index", *args, "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def same_matches(a: list[FingerprintMatch], b: list[FingerprintMatch]) -> bool:
    def key(m: FingerprintMatch) -> tuple:
        return (m.row_id, m.generation_id, m.matched_seconds, m.expected_seconds, round(m.similarity, 6),
                round(m.mean_distance, 6), m.region, m.query_variant, m.offset_s)
    return [key(m) for m in a] == [key(m) for m in b]


@pytest.fixture
def ledger_clips(runtime: Runtime) -> tuple[list[ClipFingerprint], list[str]]:
    """40 published clips of 2-5 s in the runtime's ledger."""
    rng = np.random.default_rng(16)
    fps = [clip_fingerprint(rng, int(rng.integers(2, 6))) for _ in range(40)]
    return fps, publish_rows(runtime.settings.database_url, fps)


def test_snapshot_round_trip(runtime: Runtime, ledger_clips: tuple[list[ClipFingerprint], list[str]],
                             tmp_path: Path) -> None:
    fps, ids = ledger_clips
    index = FingerprintIndex(runtime.ledger)
    assert index.refresh() == 40
    folder = tmp_path / "snap"
    (folder / ".tmp-left-by-a-crash").mkdir(parents=True)  # a writer that died before its commit
    first = index.write_snapshot(folder)
    second = index.write_snapshot(folder)
    # One current snapshot; the older one and the dead writer's folder are gone.
    assert current_snapshot(folder) == second and not first.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["CURRENT", second.name]

    loaded = FingerprintIndex(snapshot_dir=folder)  # no ledger: the snapshot alone
    loaded.refresh()
    assert loaded.loaded_from == second.name and (loaded.clips, loaded.entries) == (index.clips, index.entries)
    assert loaded.last_row == index.last_row
    for name, values in index.arrays().items():
        assert np.array_equal(loaded.arrays()[name], values), name
    rng = np.random.default_rng(1)
    for k in (0, 7, 39):
        query = query_for(fps[k], rng)
        assert same_matches(loaded.search(query), FingerprintIndex(snapshot_dir=folder).search(query))
        best = index.search(query)[0]
        assert best.generation_id == ids[k] and best.matched_seconds == fps[k].seconds
        assert loaded.search(query)[0].row_id == best.row_id

    # A damaged snapshot is not used: the index falls back to the ledger and still finds every clip.
    (second / "dhash.bin").write_bytes(b"\0" * 8)
    fallback = FingerprintIndex(runtime.ledger, snapshot_dir=folder)
    fallback.refresh()
    assert fallback.loaded_from is None and fallback.clips == 40
    assert fallback.search(query_for(fps[3], rng))[0].generation_id == ids[3]


def test_a_clip_published_by_another_process_is_found_without_a_rebuild(
        runtime: Runtime, ledger_clips: tuple[list[ClipFingerprint], list[str]], tmp_path: Path) -> None:
    folder = tmp_path / "snap"
    builder = FingerprintIndex(runtime.ledger)
    builder.refresh()
    snapshot = builder.write_snapshot(folder)
    api = FingerprintIndex(runtime.ledger, snapshot_dir=folder)  # an API process: starts from the snapshot
    api.refresh()
    assert api.loaded_from == snapshot.name and api.clips == 40
    rng = np.random.default_rng(2)
    new = clip_fingerprint(rng, 3)
    query = query_for(new, rng)
    assert api.search(query) == []
    # Another process publishes a clip (writes its rows to the shared ledger).
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from test_index import publish_rows;"
            "from provenance.fingerprint import ClipFingerprint;"
            "fp = ClipFingerprint(*(np.frombuffer(bytes.fromhex(h), dtype=d).reshape(s) for h, d, s in "
            "[(sys.argv[3], np.uint64, (3, 6)), (sys.argv[4], np.uint64, (3, 6)), (sys.argv[5], bool, (3,))]));"
            "print(publish_rows(sys.argv[2], [fp])[0])")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), runtime.settings.database_url,
                          new.phash.tobytes().hex(), new.dhash.tobytes().hex(), new.informative.tobytes().hex()],
                         capture_output=True, text=True, timeout=60, check=True)
    generation_id = out.stdout.strip()
    # The next look-up of the API process finds it: the tail of the ledger, no rebuild, same snapshot.
    found = api.search(query)
    assert found and found[0].generation_id == generation_id and found[0].matched_seconds == 3
    assert api.loaded_from == snapshot.name and api.clips == 41
    assert current_snapshot(folder) == snapshot


@pytest.mark.slow
def test_credence_index_rebuild_equals_the_incremental_index(
        runtime: Runtime, ledger_clips: tuple[list[ClipFingerprint], list[str]], cli_env: dict[str, str]) -> None:
    built = run_cli(cli_env, "rebuild")
    assert built["clips"] == 40
    folder = runtime.settings.home / "index"
    rng = np.random.default_rng(3)
    later = [clip_fingerprint(rng, int(rng.integers(1, 5))) for _ in range(12)]
    publish_rows(runtime.settings.database_url, later)
    incremental = FingerprintIndex(runtime.ledger, snapshot_dir=folder)  # snapshot of 40 + tail of 12
    assert incremental.refresh() == 12 and incremental.loaded_from is not None
    updated = run_cli(cli_env, "update")
    assert (updated["added_clips"], updated["clips"]) == (12, 52)
    rebuilt = run_cli(cli_env, "rebuild")
    assert rebuilt["clips"] == 52 and rebuilt["last_row"] == incremental.last_row
    fresh = FingerprintIndex(runtime.ledger, snapshot_dir=folder)
    assert fresh.refresh() == 0  # the rebuilt snapshot holds every row
    for name, values in incremental.arrays().items():
        assert np.array_equal(fresh.arrays()[name], values), name
    for fp in (later[0], later[-1], ledger_clips[0][5]):
        query = query_for(fp, rng)
        assert same_matches(fresh.search(query), incremental.search(query))
    status = run_cli(cli_env, "status")
    assert status["rows_since_snapshot"] == 0 and status["clips"] == 52


@pytest.fixture
def shard_servers(runtime: Runtime, ledger_clips: tuple[list[ClipFingerprint], list[str]],
                  cli_env: dict[str, str]) -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    """`credence index serve-shard` for shards 0/2 and 1/2: two processes, each with its half."""
    procs = []
    try:
        for k in (0, 1):
            proc = subprocess.Popen([sys.executable, "-m", "credence", "index", "serve-shard", "--shard", f"{k}/2"],
                                    env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
        servers = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            servers.append((proc, json.loads(line)["url"]))
        yield servers
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.mark.slow
def test_two_shards_answer_like_one(runtime: Runtime, ledger_clips: tuple[list[ClipFingerprint], list[str]],
                                    shard_servers: list[tuple[subprocess.Popen[str], str]]) -> None:
    fps, ids = ledger_clips
    halves = [sum(shard_of(g, 2) == k for g in ids) for k in (0, 1)]
    assert min(halves) > 0  # both shards hold clips
    one = FingerprintIndex(runtime.ledger)
    sharded = ShardedIndex([url for _, url in shard_servers])
    rng = np.random.default_rng(4)
    try:
        for k in range(0, 40, 3):
            query = query_for(fps[k], rng)
            merged = sharded.search(query, limit=3)
            assert merged and merged[0].generation_id == ids[k]
            assert same_matches(merged, one.search(query, limit=3))
        # A query that looks like clips of both shards: the merge keeps the best of each.
        a = next(i for i, g in enumerate(ids) if shard_of(g, 2) == 0)
        b = next(i for i, g in enumerate(ids) if shard_of(g, 2) == 1)
        both = query_for(fps[a], rng)
        other = query_for(fps[b], rng)
        both = QueryFingerprint(both.times, both.phash.copy(), both.dhash.copy(), both.informative)
        both.phash[:, 1] = other.phash[: both.phash.shape[0], 0] if other.phash.shape[0] >= both.phash.shape[0] \
            else both.phash[:, 1]
        assert same_matches(sharded.search(both, limit=5), one.search(both, limit=5))
        # A deployment names its shards in CREDENCE_INDEX_SHARDS: verification then asks them.
        configured = Runtime(replace(runtime.settings, index_shards=tuple(url for _, url in shard_servers)))
        source = configured.verification_sources()[-1]
        assert isinstance(source.index, ShardedIndex)
        query = query_for(fps[5], rng)
        assert same_matches(source.index.search(query, limit=3), one.search(query, limit=3))
        # A shard that does not answer fails the look-up: never a partial "no match".
        shard_servers[1][0].terminate()
        shard_servers[1][0].wait(timeout=10)
        with pytest.raises(ShardUnavailable):
            sharded.search(query_for(fps[0], rng))
    finally:
        sharded.close()
