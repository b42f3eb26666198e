"""A keyed batch's buckets: how many (``plan_buckets_for``), and which bucket a key goes to
(``bucket_of``), both decided here, when the batch is planned.

A batch whose processor is a ``KeyedProcessor`` shuffles (``core.shuffle``): each chunk sends
its records to buckets by key, and one step per bucket processes whole keys. The count is
about one bucket per chunk, at least 1 and at most ``chunking.max_buckets``; it is kept in
``plan.json`` with the key column and the hash scheme, so that a resumed run cuts buckets as
the first run did (``plan_file.plan_or_reuse``).

The hash (``HASH_SCHEME``) must give a key the same bucket in every process, on every machine
and in every later version, or a resumed batch would split a key between two buckets:
Python's ``hash()`` is salted per process, and polars' hash may change between versions, so
neither is used. It is 64-bit FNV-1a over the UTF-8 bytes of the key's text (``key_text``:
the text states are stored under), finished with MurmurHash3's 64-bit mix so that every bit
counts, then taken modulo the count. Vectorised with numpy: each distinct key is hashed once,
byte position by byte position over the keys at least that long. Null keys all go to bucket
0 (the processor rejects them there).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_pipeline.core.common.models import BatchSpec, BucketPlan
from batch_pipeline.core.processing.processors import get_processor
from batch_pipeline.core.processing.processors.keyed import KeyedProcessor, key_text

HASH_SCHEME = "fnv1a64-fmix64-utf8"

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MIX = (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))


def batch_key_column(spec: BatchSpec) -> str | None:
    """The key column of the batch's processor when it is keyed, else None."""
    processor = get_processor(spec.processor, spec.processor_options, spec.processor_modules)
    return processor.key_column() if isinstance(processor, KeyedProcessor) else None


def plan_buckets_for(spec: BatchSpec, chunks: int) -> BucketPlan | None:
    """The buckets of a batch planned into ``chunks`` chunks: None unless its processor is
    keyed; else about one per chunk, at least 1, at most ``chunking.max_buckets``."""
    key = batch_key_column(spec)
    if key is None:
        return None
    bound = spec.chunking.max_buckets
    count = max(1, min(chunks, bound))
    reason = f"{count} bucket(s) by {key!r}, one per chunk"
    if chunks > bound:
        reason = f"{count} bucket(s) by {key!r}: max_buckets={bound} for {chunks} chunks"
    return BucketPlan(count=count, key_column=key, scheme=HASH_SCHEME, reason=reason)


def bucket_of(column: pa.Array | pa.ChunkedArray, count: int) -> np.ndarray:
    """The bucket (0..count-1, int64) of each value of a key column, by ``HASH_SCHEME``."""
    keys = key_text(column)
    encoded = pc.dictionary_encode(keys)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    hashes = hash_text(encoded.dictionary)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    buckets = np.zeros(len(codes), dtype=np.int64)
    known = codes >= 0
    buckets[known] = (hashes[codes[known]] % np.uint64(count)).astype(np.int64)
    return buckets


def hash_text(strings: pa.Array) -> np.ndarray:
    """FNV-1a 64 of each string's UTF-8 bytes, with MurmurHash3's fmix64 (uint64 per value;
    a null hashes as the empty string)."""
    n = len(strings)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    wide = pa.types.is_large_string(strings.type) or pa.types.is_large_binary(strings.type)
    _, offset_buffer, data_buffer = strings.buffers()
    raw = np.frombuffer(offset_buffer, dtype=np.int64 if wide else np.int32)
    offsets: np.ndarray = raw[strings.offset : strings.offset + n + 1].astype(np.int64)
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)
        if data_buffer is not None
        else np.empty(0, np.uint8)
    )
    lengths = offsets[1:] - offsets[:-1]
    order = np.argsort(-lengths, kind="stable")  # longest first
    starts, ordered_lengths = offsets[:-1][order], lengths[order]
    # At byte position j, the keys longer than j are the first ``longer[j]`` of ``order``.
    longer = np.searchsorted(-ordered_lengths, -np.arange(int(ordered_lengths[0])), side="left")
    hashes = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j, k in enumerate(longer):
            head = hashes[:k]
            head ^= data[starts[:k] + j].astype(np.uint64)
            head *= _FNV_PRIME
        hashes ^= hashes >> np.uint64(33)
        hashes *= _MIX[0]
        hashes ^= hashes >> np.uint64(33)
        hashes *= _MIX[1]
        hashes ^= hashes >> np.uint64(33)
    result = np.empty(n, dtype=np.uint64)
    result[order] = hashes
    return result
