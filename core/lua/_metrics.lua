-- Shared metric helpers, prepended to every script that records metrics (core/metrics.py reads
-- what they write). Keys always arrive through KEYS; these helpers only take them as values.

-- Execution-time histogram: log buckets of ratio 1.02, so a bucket's midpoint
-- 2*1.02^i/2.02 is within 1% of any value inside it. Bucket i holds (1.02^(i-1), 1.02^i] ms;
-- field "z" holds times under 1 us; "sum_us" the exact sum in microseconds.
local LOG_GAMMA = math.log(1.02)
local MAX_MS = 86400000

local function timing_field(ms)
  if ms < 0.001 then return 'z' end
  if ms > MAX_MS then ms = MAX_MS end
  return string.format('%d', math.ceil(math.log(ms) / LOG_GAMMA))
end

-- Add `timings` (ms) to the day's histogram (expires after `ttl`) and the all-time one. Each
-- histogram is read and written once (HMGET + HSET of the touched fields), whatever the number
-- of buckets a batch touches: a batch costs 5 commands, not 2 per bucket.
local function record_timings(day_key, all_key, timings, ttl)
  if #timings == 0 then return end
  local counts, sum_us = {}, 0
  for _, ms in ipairs(timings) do
    local f = timing_field(ms)
    counts[f] = (counts[f] or 0) + 1
    sum_us = sum_us + math.floor(ms * 1000 + 0.5)
  end
  local fields, adds = {}, {}
  for f, n in pairs(counts) do
    fields[#fields + 1] = f
    adds[#adds + 1] = n
  end
  fields[#fields + 1] = 'sum_us'
  adds[#adds + 1] = sum_us
  for _, key in ipairs({day_key, all_key}) do
    local current = redis.call('HMGET', key, unpack(fields))
    local updates = {}
    for i, f in ipairs(fields) do
      updates[#updates + 1] = f
      -- %d: Lua would write a large number as 1e+15, which HINCRBY could not read back
      updates[#updates + 1] = string.format('%d', (tonumber(current[i]) or 0) + adds[i])
    end
    redis.call('HSET', key, unpack(updates))
  end
  redis.call('EXPIRE', day_key, ttl)
end

-- Daily counter (EXPIRE only when the key is new) plus the all-time total of the same name.
local function count(counter_key, totals_key, name, by, ttl)
  if by <= 0 then return end
  if redis.call('INCRBY', counter_key, by) == by then
    redis.call('EXPIRE', counter_key, ttl)
  end
  redis.call('HINCRBY', totals_key, name, by)
end
