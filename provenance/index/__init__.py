"""The fingerprint index's parts: the clip store and its snapshots, and shards queried together.

`provenance.fingerprint_index.FingerprintIndex` is the index a process searches; this package
holds what it is made of (`store`) and what spreads it over processes (`shards`).
"""
