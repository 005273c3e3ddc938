-- POST /feedback with a batch of WRK_BATCH random events per request (unique event ids).
local users = {}
for line in io.lines(os.getenv("WRK_USERS")) do users[#users + 1] = line end
local tracks = {}
for line in io.lines(os.getenv("WRK_TRACKS")) do tracks[#tracks + 1] = line end
local batch = tonumber(os.getenv("WRK_BATCH") or "100")
local key = os.getenv("WRK_KEY") or ""
local types = {"play", "track_completed", "track_skipped", "like", "recommendation_shown"}
local counter = 0
local created = 0

function setup(thread)  -- runs in the main state: give each thread its own id
  created = created + 1
  thread:set("tid", created)
end

function init(args)
  math.randomseed(tid * 7919 + os.time())
end

request = function()
  local parts = {}
  for i = 1, batch do
    counter = counter + 1
    parts[i] = string.format('{"event_id":"b%s-%d","user_id":"%s","track_id":"%s","type":"%s","ms_played":120000}',
      tostring(tid) .. "-" .. os.time(), counter, users[math.random(#users)], tracks[math.random(#tracks)], types[math.random(#types)])
  end
  return wrk.format("POST", "/feedback", {["Content-Type"] = "application/json", ["X-API-Key"] = key}, "[" .. table.concat(parts, ",") .. "]")
end

done = function(summary, latency, requests)
  io.write(string.format('JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
