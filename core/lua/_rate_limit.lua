-- Shared sliding-window rate limiter, prepended to the scripts that rate-limit a user.
-- The log is ONE string at the user's rate key: the timestamps (ms) of the accepted requests
-- still inside the window, comma-separated, oldest first, at most `limit` of them. Reading it
-- is one GET and recording an accepted request one SET ... PX window, so a blocked request
-- costs a single command and an accepted one two. The window is exact: a request is allowed
-- while fewer than `limit` accepted requests lie in (now - window, now].

-- Returns allowed (boolean), wait_ms (until a slot frees, 0 when allowed), kept (the log).
local function rate_limit_check(rate_key, now_ms, window_ms, limit)
  local kept = {}
  local raw = redis.call('GET', rate_key)
  if raw then
    for text in string.gmatch(raw, '%d+') do
      local ts = tonumber(text)
      if ts > now_ms - window_ms then kept[#kept + 1] = ts end
    end
    table.sort(kept)  -- clocks of concurrent callers may disagree by a few ms
  end
  if #kept >= limit then
    -- The request fits once the entry `limit` places from the newest leaves the window.
    local blocking = kept[#kept - limit + 1]
    -- Callers' clocks disagree by a few ms: an entry stamped after `now` must not make the
    -- wait longer than one window.
    local wait = math.min(window_ms, math.max(1, blocking + window_ms - now_ms))
    return false, wait, kept
  end
  return true, 0, kept
end

-- Append `now_ms` to the log and store the newest `limit` entries; the key lives one window.
local function rate_limit_record(rate_key, kept, now_ms, window_ms, limit)
  kept[#kept + 1] = now_ms
  table.sort(kept)
  local parts = {}
  for i = math.max(1, #kept - limit + 1), #kept do
    parts[#parts + 1] = string.format('%d', kept[i])
  end
  redis.call('SET', rate_key, table.concat(parts, ','), 'PX', window_ms)
end

-- Count one read against a user's read limit (limited reads, WebSocket connects): nil when
-- allowed, and then recorded; else the ms to wait, with nothing recorded.
local function take_read(rate_key, now_ms, window_ms, limit)
  local allowed, wait_ms, kept = rate_limit_check(rate_key, now_ms, window_ms, limit)
  if not allowed then return wait_ms end
  rate_limit_record(rate_key, kept, now_ms, window_ms, limit)
  return nil
end
