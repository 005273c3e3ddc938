-- Random users (and tracks) per request; prints one JSON line of figures when done.
-- Environment: WRK_USERS (file, one user id per line), WRK_TRACKS (file, optional), WRK_KEY, WRK_MODE
local function lines(path)
  local out = {}
  if path == nil or path == "" then return out end
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end

local users = lines(os.getenv("WRK_USERS"))
local tracks = lines(os.getenv("WRK_TRACKS"))
local mode = os.getenv("WRK_MODE") or "recommend"
local headers = {["X-API-Key"] = os.getenv("WRK_KEY") or ""}

request = function()
  local user = users[math.random(#users)]
  local path
  if mode == "similar" then
    path = "/recommendations/" .. user .. "/similar/" .. tracks[math.random(#tracks)] .. "?count=20"
  else
    path = "/recommendations/" .. user .. "?count=20"
  end
  return wrk.format("GET", path, headers)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
