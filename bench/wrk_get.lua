-- wrk script for bench/api.py: GET one fixed path, or BENCH_PATH .. a random user name.
--   BENCH_TOKEN  the API token (sent as "Authorization: token ...")
--   BENCH_PATH   the path, or the prefix a name is appended to when BENCH_NAMES is set
--   BENCH_NAMES  optional file with one user name per line
-- done() prints one "BENCH_JSON {...}" line that api.py parses.

wrk.headers["Authorization"] = "token " .. os.getenv("BENCH_TOKEN")
wrk.headers["Accept"] = "application/json"

local path = os.getenv("BENCH_PATH")
local names_file = os.getenv("BENCH_NAMES")
local names = {}
if names_file then
   for line in io.lines(names_file) do
      if #line > 0 then names[#names + 1] = line end
   end
end

function init(args)
   math.randomseed(os.time())
end

function request()
   if #names > 0 then
      return wrk.format("GET", path .. names[math.random(#names)])
   end
   return wrk.format("GET", path)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
         .. '"errors_status": %d, "errors_connect": %d, "errors_read": %d, '
         .. '"errors_write": %d, "errors_timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      e.status, e.connect, e.read, e.write, e.timeout))
end
