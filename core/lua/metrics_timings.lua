-- Add execution times to the day's histogram and the all-time one. Prelude: _metrics.lua.
-- KEYS[1] the UTC day's histogram, KEYS[2] the all-time histogram
-- ARGV[1] TTL of the day key in seconds, ARGV[2..] durations in milliseconds
-- Returns the number of durations recorded.
local timings = {}
for i = 2, #ARGV do
  local ms = tonumber(ARGV[i])
  if ms == nil or ms ~= ms then return redis.error_reply('ERR not a duration: ' .. ARGV[i]) end
  if ms < 0 then ms = 0 end
  timings[#timings + 1] = ms
end
record_timings(KEYS[1], KEYS[2], timings, tonumber(ARGV[1]))
return #timings
