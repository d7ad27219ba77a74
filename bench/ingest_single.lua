-- bench/ingest_single.lua: wrk script for bench_ingest.sh: one measurement per POST.
-- Env: BENCH_TOKEN (bearer token), BENCH_BODY (the JSON body), BENCH_DEPTH (requests written
-- back to back on a connection before reading the answers: 1 = plain keep-alive, N = HTTP/1.1
-- pipelining; default 1).
-- No response() callback: handing every response to Lua costs wrk about a quarter of its
-- CPU, which it shares with the service on a small machine. wrk counts non-2xx answers itself
-- (summary.errors.status), and on this endpoint the only 2xx is 202.
local depth = tonumber(os.getenv("BENCH_DEPTH") or "1")
local hdrs = {["Content-Type"] = "application/json",
              ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")}
local body = os.getenv("BENCH_BODY")

function init(args)
  local r = {}
  for i = 1, depth do r[i] = wrk.format("POST", "/v1/measurements", hdrs, body) end
  req = table.concat(r)
end
function request() return req end
function done(summary, latency, requests)
  local e = summary.errors
  local bad = e.status + e.connect + e.read + e.write + e.timeout
  io.write(string.format("BENCH accepted=%d other=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests - e.status - e.timeout, bad, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
