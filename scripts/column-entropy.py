#!/usr/bin/env python3
"""How far a block's start and duration columns compress by themselves (docs/benchmarks.md,
"Block checksums ..."): byte-split, xz -9e over the whole column, per span.

usage: scripts/column-entropy.py DATA_DIR   (uses the largest block's data.parquet; needs pyarrow)
"""
import glob, lzma, os, sys

import numpy as np
import pyarrow.parquet as pq

f = max(glob.glob(os.path.join(sys.argv[1], 'blocks', '*', 'data.parquet')), key=os.path.getsize)
t = pq.read_table(f, columns=['trace_id', 'start_unix_nano', 'duration_nano'])
n = t.num_rows
tid = t.column('trace_id').to_pylist()
start = np.array(t.column('start_unix_nano').to_pylist(), dtype=np.int64)
duration = np.array(t.column('duration_nano').to_pylist(), dtype=np.int64)
first = np.array([i == 0 or tid[i] != tid[i - 1] for i in range(n)])
trace = np.cumsum(first) - 1
trace_start = np.full(trace.max() + 1, np.iinfo(np.int64).max)
np.minimum.at(trace_start, trace, start)


def xz_per_span(values):
    split = values.astype('<u8').view(np.uint8).reshape(-1, 8).T.copy().tobytes()
    return len(lzma.compress(split, preset=9 | lzma.PRESET_EXTREME)) / n


print(f"{f}: {n} spans, {trace.max() + 1} traces")
print(f"start, as stored:            {xz_per_span(start):.2f} B/span")
print(f"start, offset from its trace: {xz_per_span(start - trace_start[trace]):.2f} B/span "
      f"(+ {xz_per_span(trace_start):.2f} for the traces' starts)")
print(f"duration:                    {xz_per_span(duration):.2f} B/span")
print(f"mean log2 duration:          {np.mean(np.log2(duration + 1)):.1f} bits")
