-- bench/ingest_batch.lua: wrk script for bench_ingest.sh: NDJSON batches.
-- Env: BENCH_TOKEN, BENCH_BODY_FILE (the NDJSON body), BENCH_ITEMS (items per body).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
local items = tonumber(os.getenv("BENCH_ITEMS"))

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) accepted = 0; other = 0 end
function response(status, headers, body)
  -- 202: every item is in Kafka; anything else counts as a failed batch.
  if status == 202 then accepted = accepted + items else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("BENCH accepted=%d other=%d duration_us=%d p50_us=%d p99_us=%d\n",
    a, o, summary.duration, latency:percentile(50), latency:percentile(99)))
end
