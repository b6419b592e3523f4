// Sends a two-span trace with the npm `jaeger-client` tracer to a Jaeger agent port over UDP.
// Its UDPSender encodes `Agent.emitBatch` with the thrift *binary* protocol (agent port 6832).
//   node jaeger_client_udp.js HOST PORT
// Prints {"trace_id", "root", "child", "service"} (hex ids; 64-bit trace ids, as the client's
// default) once the reporter has flushed.
const { initTracer } = require("jaeger-client");

const [host, port] = process.argv.slice(2);
const service = "node-jaeger-client";
const quiet = { info() {}, error(msg) { console.error(msg); } };
const tracer = initTracer(
  {
    serviceName: service,
    sampler: { type: "const", param: 1 },
    reporter: { agentHost: host, agentPort: Number(port), flushIntervalMs: 50 },
  },
  { tags: { "deployment.zone": "z1" }, logger: quiet },
);

const root = tracer.startSpan("node-root", { tags: { "span.kind": "server", "http.status_code": 200 } });
const child = tracer.startSpan("node-child", { childOf: root.context() });
child.setTag("error", true);
child.setTag("ratio", 0.5);
child.log({ event: "boom", detail: "disk full" });
child.finish();
root.finish();

tracer.close(() => {
  const ctx = root.context();
  console.log(
    JSON.stringify({
      trace_id: ctx.traceIdStr,
      root: ctx.spanIdStr,
      child: child.context().spanIdStr,
      service,
    }),
  );
});
