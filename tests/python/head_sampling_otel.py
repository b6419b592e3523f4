"""Lets OpenTelemetry's own consistent probability sampler (opentelemetry-sdk's composable
TraceIdRatioBased, which writes `ot=th:` into the tracestate) decide on COUNT new traces, and
prints each decision as one JSON line for crates/skein/tests/head_sampling.rs, which sends every
one of those traces to skein and checks that skein keeps exactly the ones the SDK sampled.

Every trace is a root: opentelemetry-sdk 1.39.1's tracer does not hand the parent's tracestate
to the sampler, so it cannot be asked to decide by an explicit `ot=rv:` (skein's unit tests
cover rv).

usage: head_sampling_otel.py PROBABILITY COUNT
"""

import json
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace._sampling_experimental import (
    composable_traceid_ratio_based,
    composite_sampler,
)


def main(probability, count):
    provider = TracerProvider(sampler=composite_sampler(composable_traceid_ratio_based(probability)))
    tracer = provider.get_tracer("skein-head-sampling-test")
    for _ in range(count):
        span = tracer.start_span("work")
        sc = span.get_span_context()
        print(
            json.dumps(
                {
                    "trace_id": f"{sc.trace_id:032x}",
                    "span_id": f"{sc.span_id:016x}",
                    "sampled": sc.trace_flags.sampled,
                    "trace_state": sc.trace_state.to_header(),
                }
            )
        )
        span.end()


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]))
