"""Shards of the fingerprint index as HTTP servers, queried scatter-gather.

Past what one box holds, clips are split by `shard_of(generation_id, n)` (CRC-32 of a random
UUID: every shard gets the same share of clips and of query work). Each shard is a process that
holds its part of the index (snapshot + ledger tail, like any API process) and answers
`POST /search`; the verifier sends the query fingerprint to every shard at once and keeps the
best matches of all (`ShardedIndex`). Every shard scores its own candidates exactly, so the
merged top matches are those one index over all clips would give.

Why plain HTTP and not the Dramatiq/Redis job queue the API uses for generations: a look-up is
a request that must come back in tens of milliseconds or fail; a job queue adds a broker round
trip and polling, keeps the answer nowhere natural, and retries what should simply time out.
HTTP gives a timeout per shard, any load balancer in front of each shard's replicas, and
`GET /status` for health checks. A shard that does not answer fails the whole look-up
(`ShardUnavailable`): a partial answer could clear a clip the missing shard holds.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from ..errors import LedgerError
from ..fingerprint import QueryFingerprint
from .fingerprint_index import FingerprintIndex
from .scoring import FingerprintMatch

#: Largest query body a shard accepts (a 10-minute upload's query is about 1.3 MB).
MAX_QUERY_BYTES = 16 * 2**20


class ShardUnavailable(LedgerError):
    """A shard did not answer: the look-up is incomplete, so nothing may be cleared on it."""


def encode_query(query: QueryFingerprint) -> bytes:
    """A query fingerprint as an .npz body."""
    buffer = io.BytesIO()
    np.savez(buffer, times=query.times, phash=query.phash, dhash=query.dhash, informative=query.informative)
    return buffer.getvalue()


def decode_query(body: bytes) -> QueryFingerprint:
    """Inverse of `encode_query`; ValueError for anything else."""
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as data:
            query = QueryFingerprint(data["times"].astype(np.float64), data["phash"].astype(np.uint64),
                                     data["dhash"].astype(np.uint64), data["informative"].astype(bool))
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise ValueError(f"not a query fingerprint: {exc}") from None
    n = query.times.shape[0]
    if query.phash.ndim != 2 or query.phash.shape != query.dhash.shape or query.phash.shape[0] != n \
            or query.informative.shape != (n,):
        raise ValueError("query arrays disagree in shape")
    return query


def match_to_json(match: FingerprintMatch) -> dict[str, Any]:
    """Every field of a match (the shard's answer)."""
    return {"row_id": match.row_id, "generation_id": match.generation_id, "matched_seconds": match.matched_seconds,
            "expected_seconds": match.expected_seconds, "similarity": match.similarity,
            "mean_distance": match.mean_distance, "region": match.region, "query_variant": match.query_variant,
            "offset_s": match.offset_s, "speed": match.speed, "query_start_s": match.query_start_s,
            "query_end_s": match.query_end_s, "clip_start_s": match.clip_start_s, "clip_end_s": match.clip_end_s}


def match_from_json(data: dict[str, Any]) -> FingerprintMatch:
    """Inverse of `match_to_json`."""
    return FingerprintMatch(int(data["row_id"]), data["generation_id"], int(data["matched_seconds"]),
                            int(data["expected_seconds"]), float(data["similarity"]), float(data["mean_distance"]),
                            int(data["region"]), int(data["query_variant"]), float(data["offset_s"]),
                            float(data.get("speed", 1.0)), float(data.get("query_start_s", 0.0)),
                            float(data.get("query_end_s", 0.0)), float(data.get("clip_start_s", 0.0)),
                            float(data.get("clip_end_s", 0.0)))


def shard_server(index: FingerprintIndex, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server answering look-ups on `index` (call `serve_forever`; port 0 picks one)."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != "/status":
                self._answer(404, {"error": "not found"})
                return
            self._answer(200, {"shard": list(index.shard) if index.shard else None, "clips": index.clips,
                               "entries": index.entries, "last_row": index.last_row})

        def do_POST(self) -> None:
            path, _, params = self.path.partition("?")
            if path != "/search":
                self._answer(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length") or -1)
                limit = int(params.removeprefix("limit=") or 5) if params else 5
            except ValueError:
                self._answer(400, {"error": "bad Content-Length or limit"})
                return
            if not 0 < length <= MAX_QUERY_BYTES or not 0 < limit <= 100:
                self._answer(400, {"error": f"a query body of 1..{MAX_QUERY_BYTES} bytes and limit 1..100"})
                return
            try:
                query = decode_query(self.rfile.read(length))
            except ValueError as exc:
                self._answer(400, {"error": str(exc)})
                return
            try:
                matches = index.search(query, limit=limit)
            except Exception:  # the ledger tail failed: say so, never answer "no match"
                self._answer(503, {"error": "the shard's index could not be refreshed"})
                return
            self._answer(200, {"matches": [match_to_json(m) for m in matches], "clips": index.clips})

        def log_message(self, format: str, *args: Any) -> None:  # quiet: one line per look-up is noise
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class ShardedIndex:
    """Scatter-gather over shard servers: the same `search` as one `FingerprintIndex`."""

    def __init__(self, urls: list[str], *, timeout: float = 5.0) -> None:
        if not urls:
            raise ValueError("a sharded index needs at least one shard URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=len(self.urls), thread_name_prefix="shard")
        self._lock = threading.Lock()

    def _ask(self, url: str, body: bytes, limit: int) -> list[FingerprintMatch]:
        request = urllib.request.Request(f"{url}/search?limit={limit}", data=body, method="POST",
                                         headers={"Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ShardUnavailable(f"index shard {url} did not answer ({type(exc).__name__})") from None
        return [match_from_json(m) for m in payload["matches"]]

    def search(self, query: QueryFingerprint, *, limit: int = 5) -> list[FingerprintMatch]:
        """Every shard's best `limit` matches, merged: the best `limit` of all."""
        body = encode_query(query)
        futures = [self._pool.submit(self._ask, url, body, limit) for url in self.urls]
        merged = [m for f in futures for m in f.result()]
        merged.sort(key=FingerprintMatch.sort_key)
        return merged[:limit]

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False)
