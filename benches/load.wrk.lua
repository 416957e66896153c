-- wrk script for benches/load.sh: POSTs the file $BENCH_BODY as a JSON body (built once,
-- so wrk sends the same pre-rendered request every time), optional extra header from
-- $BENCH_HEADER ("name: value"), and prints one machine-readable summary line.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
  local name, value = extra:match("^%s*([^:]+):%s*(.-)%s*$")
  wrk.headers[name] = value
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d rps=%.1f connect_err=%d read_err=%d write_err=%d " ..
    "status_err=%d timeout_err=%d p50_ms=%.3f p99_ms=%.3f\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
