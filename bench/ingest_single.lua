-- bench/ingest_single.lua: wrk script for bench_ingest.sh: one measurement per POST.
-- Env: BENCH_TOKEN (bearer token), BENCH_BODY (the JSON body).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.body = os.getenv("BENCH_BODY")

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) accepted = 0; other = 0 end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("BENCH accepted=%d other=%d duration_us=%d p50_us=%d p99_us=%d\n",
    a, o, summary.duration, latency:percentile(50), latency:percentile(99)))
end
