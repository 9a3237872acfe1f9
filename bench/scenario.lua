-- One wrk scenario against the booking service, chosen by the script arguments:
--
--   wrk -t2 -c64 -d5s -s bench/scenario.lua http://127.0.0.1:PORT -- KIND FIRST COUNT TAG
--
-- KIND   health | reserve | availability
-- FIRST  the first event id, COUNT how many consecutive events to spread requests over
-- TAG    a prefix that keeps this run's user ids apart from every other run's
--
-- Every booking has a distinct user id (tag, thread number, counter), so each request is a
-- real booking attempt. Status counts, and the X-Cache-Status values when nginx sends them,
-- are gathered per thread and printed by done() as one JSON line, next to wrk's own latency
-- percentiles, for bench/run.py to parse.

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("thread_number", #threads)
end

function init(args)
    kind = args[1]
    first_event = tonumber(args[2] or "1")
    event_count = tonumber(args[3] or "1")
    tag = args[4] or "bench"
    counter = 0
    statuses = {}
    cache = {}
    math.randomseed(thread_number * 7919 + os.time())
end

local json_headers = { ["Content-Type"] = "application/json" }

function request()
    counter = counter + 1
    local event_id = first_event + math.random(0, event_count - 1)
    if kind == "health" then
        return wrk.format("GET", "/health")
    elseif kind == "availability" then
        return wrk.format("GET", "/api/events/" .. event_id .. "/availability")
    end
    local body = string.format('{"event_id": %d, "user_id": "%s-%d-%d"}',
        event_id, tag, thread_number, counter)
    return wrk.format("POST", "/api/bookings/reserve", json_headers, body)
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
    local cache_status = headers["X-Cache-Status"]
    if cache_status then
        cache[cache_status] = (cache[cache_status] or 0) + 1
    end
end

local function json_counts(key)
    local totals = {}
    for _, thread in ipairs(threads) do
        for value, n in pairs(thread:get(key)) do
            totals[value] = (totals[value] or 0) + n
        end
    end
    local parts = {}
    for value, n in pairs(totals) do
        table.insert(parts, string.format('"%s": %d', tostring(value), n))
    end
    return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
        '"socket_errors": %d, "statuses": %s, "cache": %s}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        errors.connect + errors.read + errors.write + errors.timeout,
        json_counts("statuses"), json_counts("cache")))
end
