-- wrk script for the lab's benign web clients: a think time between requests, so wrk
-- behaves like a busy but rate-limited client rather than a load test. The bounds come
-- from the environment (milliseconds), set by trafficlab/benign.py.
local lo = tonumber(os.getenv("EL_THINK_MIN_MS") or "50")
local hi = tonumber(os.getenv("EL_THINK_MAX_MS") or "400")
local paths = {"/", "/index.html", "/news.html", "/api/status", "/style.css", "/app.js"}

request = function()
    return wrk.format("GET", paths[math.random(#paths)])
end

delay = function()
    return math.random(lo, hi)
end
