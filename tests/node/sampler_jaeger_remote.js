// Points the OpenTelemetry JS `JaegerRemoteSampler` at skein's remote-sampling endpoint, waits
// until it has fetched and applied a strategy, then reports its decisions for root spans.
//   node sampler_jaeger_remote.js ENDPOINT SERVICE SPAN_NAME [SPAN_NAME ...]
// ENDPOINT is e.g. http://127.0.0.1:5778 (the sampler appends /sampling?service=SERVICE).
// Prints {"service", "sampler", "total", "sampled": {SPAN_NAME: count}}.
const { context, SpanKind } = require("@opentelemetry/api");
const { JaegerRemoteSampler } = require("@opentelemetry/sampler-jaeger-remote");

const [endpoint, serviceName, ...spanNames] = process.argv.slice(2);
const RECORD_AND_SAMPLED = 2; // @opentelemetry/sdk-trace SamplingDecision
const TOTAL = 200;

// Samples nothing until the remote strategy arrives, so a decision to sample proves the SDK
// applied what skein sent.
const initialSampler = {
  shouldSample: () => ({ decision: 0 }),
  toString: () => "InitialNothingSampler",
};
const sampler = new JaegerRemoteSampler({ endpoint, serviceName, poolingInterval: 50, initialSampler });

function randomTraceId() {
  let s = "";
  for (let i = 0; i < 32; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

async function main() {
  const deadline = Date.now() + 60_000;
  while (sampler.toString().includes("InitialNothingSampler")) {
    if (Date.now() > deadline) {
      console.error(`the sampler never applied a remote strategy: ${sampler}`);
      process.exit(1);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  const sampled = {};
  for (const name of spanNames) {
    sampled[name] = 0;
    for (let i = 0; i < TOTAL; i++) {
      const r = sampler.shouldSample(context.active(), randomTraceId(), name, SpanKind.SERVER, {}, []);
      if (r.decision === RECORD_AND_SAMPLED) sampled[name] += 1;
    }
  }
  console.log(JSON.stringify({ service: serviceName, sampler: sampler.toString(), total: TOTAL, sampled }));
  process.exit(0);
}

main();
