-- The standalone rate-limit check (core.rate_limit.check_rate_limit): one request of a user.
-- Prelude: _metrics.lua, _rate_limit.lua.
-- KEYS[1] rate log of the user, KEYS[2] today's `rate_limit_blocked` counter, KEYS[3] totals
-- ARGV[1] now (ms), ARGV[2] window (ms), ARGV[3] limit, ARGV[4] counter TTL (s),
-- ARGV[5] name of the blocked counter
-- Returns {1, remaining} when allowed (and recorded), {0, wait_ms} when blocked (and counted).
local now_ms, window_ms, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local allowed, wait_ms, kept = rate_limit_check(KEYS[1], now_ms, window_ms, limit)
if not allowed then
  count(KEYS[2], KEYS[3], ARGV[5], 1, tonumber(ARGV[4]))
  return {0, wait_ms}
end
rate_limit_record(KEYS[1], kept, now_ms, window_ms, limit)
return {1, limit - #kept}
