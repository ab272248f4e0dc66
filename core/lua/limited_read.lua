-- Reads behind the per-user read limit, in one round trip (core.rate_limit.limited_read).
-- Prelude: _rate_limit.lua.
-- KEYS[1] the user's read-rate log; KEYS[2..] the keys the reads touch, in order
-- ARGV[1] now (ms), ARGV[2] window (ms), ARGV[3] limit,
-- ARGV[4] the reads as JSON: [[command, number of keys, other args...], ...]; each read takes
--         its keys from KEYS[2..] in turn, so every key still reaches the script via KEYS.
-- Returns {0, wait_ms} when over the limit (nothing read, nothing recorded), else
-- {1, reply of read 1, reply of read 2, ...} with the read recorded in the log.
local wait_ms = take_read(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if wait_ms then return {0, wait_ms} end
local out, next_key = {1}, 2
for _, spec in ipairs(cjson.decode(ARGV[4])) do
  local args = {}
  for _ = 1, spec[2] do
    args[#args + 1] = KEYS[next_key]
    next_key = next_key + 1
  end
  for i = 3, #spec do
    args[#args + 1] = spec[i]
  end
  -- A missing value comes back as false, which keeps its place in the reply (a nil would not).
  out[#out + 1] = redis.call(spec[1], unpack(args))
end
return out
