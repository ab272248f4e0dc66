-- A WebSocket connection opens for a user, counted as one read. Prelude: _rate_limit.lua.
-- KEYS: 1 connection record, 2 the user's read-rate log
-- ARGV: 1 now_ms, 2 read window ms, 3 read limit, 4 connection record JSON, 5 ttl s
-- Returns {1} (stored) or {0, wait_ms} (over the read limit: nothing stored).
local wait_ms = take_read(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait_ms then return {0, wait_ms} end
redis.call('SET', KEYS[1], ARGV[4], 'EX', tonumber(ARGV[5]))
return {1}
