-- bench/ingest_batch.lua: wrk script for bench_ingest.sh: NDJSON batches.
-- Env: BENCH_TOKEN, BENCH_BODY_FILE (the NDJSON body), BENCH_ITEMS (items per body),
-- BENCH_STOP_AFTER and BENCH_STOP_FIFO (optional: a thread that has this many items accepted
-- stops and writes its number as one line to the named pipe BENCH_STOP_FIFO, so that a run
-- sends a fixed record count, kcat's; wrk's main thread sleeps for -d whatever its threads do,
-- so bench_ingest.sh blocks reading the pipe and ends wrk with SIGINT once every thread has
-- written, which makes it print its summary at once. A blocking read costs nothing while the
-- load runs: polling for stop files every 10 ms, as before, cost a third of a core).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
local items = tonumber(os.getenv("BENCH_ITEMS"))
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
local stop_fifo = os.getenv("BENCH_STOP_FIFO")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("number", #threads)
end
function init(args) accepted = 0; other = 0; stopped = false end
function response(status, headers, body)
  -- 202: every item is in Kafka; anything else counts as a failed batch.
  if status == 202 then accepted = accepted + items else other = other + 1 end
  if stop_after > 0 and accepted >= stop_after and not stopped then
    stopped = true
    -- One short line: atomic on a pipe, whichever threads write at once.
    local f = assert(io.open(stop_fifo, "w"))
    f:write(number, "\n")
    f:close()
    wrk.thread:stop()
  end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  io.write(string.format("BENCH accepted=%d other=%d duration_us=%d p50_us=%d p99_us=%d\n",
    a, o, summary.duration, latency:percentile(50), latency:percentile(99)))
end
