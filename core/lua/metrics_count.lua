-- Increment a daily counter (and, for the names Prometheus exports, the all-time total).
-- Prelude: _metrics.lua.
-- KEYS[1] daily counter key, KEYS[2] all-time totals hash (absent: daily counter only)
-- ARGV[1] counter name, ARGV[2] amount (> 0), ARGV[3] TTL of the daily key in seconds
-- Returns the daily counter's new value.
local by, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
if KEYS[2] then
  count(KEYS[1], KEYS[2], ARGV[1], by, ttl)
  return tonumber(redis.call('GET', KEYS[1]))
end
local value = redis.call('INCRBY', KEYS[1], by)
if value == by then redis.call('EXPIRE', KEYS[1], ttl) end
return value
