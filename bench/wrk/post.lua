-- POSTs the same small task to every target; prints one JSON line the runner parses.
-- BODY and TOKEN come from the environment so one script serves every scenario.
-- With BENCH_RATE (requests per second, all connections together) requests are paced on a fixed
-- schedule instead of sent back to back: the latency phase's "moderate rate" mode.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")

local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate then
  -- wrk asks delay() (ms, whole) before each request; a slot on one schedule per thread, rather than a
  -- fixed pause after each answer, keeps the rate independent of the latency being measured.
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clock_id, bench_timespec *tp);
  ]]
  local now = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, now) -- CLOCK_MONOTONIC
    return tonumber(now.tv_sec) * 1000 + tonumber(now.tv_nsec) / 1e6
  end
  local interval_ms = 1000 / rate
  local next_slot_ms = nil
  function delay()
    local current = now_ms()
    next_slot_ms = math.max(next_slot_ms and next_slot_ms + interval_ms or current, current - 10 * interval_ms)
    return math.max(0, math.floor(next_slot_ms - current + 0.5))
  end
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"non_2xx":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
