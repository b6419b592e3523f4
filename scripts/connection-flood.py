#!/usr/bin/env python3
# Usage: scripts/connection-flood.py QUERY_PORT OTLP_HTTP_PORT CONNECTIONS (docs/benchmarks.md,
# "Connection slots keep descriptors for the store"); loopback only, ends by itself.
# Flood the OTLP/HTTP port with N idle connections under the server's open-files limit, then
# send one span a second over a connection opened before, for 8 s, and report head cuts and errors.
import socket, time, http.client, json, os, sys, urllib.request
q=int(sys.argv[1]); h=int(sys.argv[2]); n=int(sys.argv[3])
hc=http.client.HTTPConnection("127.0.0.1",h)
def metric(names):
    try:
        t=urllib.request.urlopen(f"http://127.0.0.1:{q}/metrics",timeout=3).read().decode()
        return [l for l in t.splitlines() if any(l.startswith(x) for x in names)]
    except Exception as e: return f"/metrics failed: {e}"
def send():
    now=time.time_ns()
    body={"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"front"}}]},"scopeSpans":[{"spans":[{"traceId":os.urandom(16).hex(),"spanId":os.urandom(8).hex(),"name":"GET /","kind":2,"startTimeUnixNano":str(now-10**6),"endTimeUnixNano":str(now)}]}]}]}
    hc.request("POST","/v1/traces",json.dumps(body),{"content-type":"application/json"}); r=hc.getresponse(); r.read(); return r.status
print("before flood:", send(), metric(["skein_head_cuts_total","skein_connections_max"]))
socks=[]; t0=time.time()
for i in range(n):
    s=socket.socket(); s.settimeout(3)
    try: s.connect(("127.0.0.1",h))
    except Exception as e: print("connect",i,e); break
    socks.append(s)
print(f"{len(socks)} connections in {time.time()-t0:.2f}s"); time.sleep(2)
statuses=[]
for k in range(8):
    statuses.append(send()); time.sleep(1)
print("statuses during flood:", statuses)
print("during flood:", metric(["skein_head_cuts_total","skein_connections_open","process_open_fds"]))
del socks; time.sleep(3)
print("after flood:", metric(["skein_head_cuts_total","skein_connections_open","process_open_fds"]))
