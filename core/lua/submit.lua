-- One submit, in one round trip: idempotency lookup, rate limit, enqueue, status record,
-- counters. Prelude: _metrics.lua, _queue.lua, _rate_limit.lua.
-- KEYS[1] rate log of the user      KEYS[2] request queue (list)   KEYS[3] its schedule (zset)
-- KEYS[4] status record of the job  KEYS[5] today's `jobs` counter
-- KEYS[6] today's `rate_limit_blocked` counter                     KEYS[7] totals (hash)
-- KEYS[8] the drains' awake key (core/elastic.py)
-- KEYS[9] idempotency record (only when the request carries an Idempotency-Key)
-- ARGV[1] now (ms)   ARGV[2] window (ms)   ARGV[3] limit   ARGV[4] job id   ARGV[5] job JSON
-- ARGV[6] status record JSON   ARGV[7] status record TTL (s)   ARGV[8] counter TTL (s)
-- ARGV[9] name of the submitted counter   ARGV[10] name of the blocked counter
-- ARGV[11] body fingerprint   ARGV[12] idempotency record JSON   ARGV[13] its TTL (s)
-- ARGV[14] wake lock (ms; '0' = DRAIN_WAKE off)
-- Returns {'accepted', job id, wake 1|0} | {'replay', original job id} | {'conflict', ''}
--       | {'limited', wait_ms}
local now_ms, window_ms, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local idem_key = KEYS[9]

if idem_key then
  local stored = redis.call('GET', idem_key)
  if stored then
    -- A replay is answered from the record alone: not rate-limited, nothing enqueued.
    local record = cjson.decode(stored)
    if record.fingerprint ~= ARGV[11] then return {'conflict', ''} end
    return {'replay', record.jobId}
  end
end

-- The job id is made by the caller, so a resend of this very request (its answer was lost)
-- finds the record its first send wrote: answer that job, store nothing twice. The record is
-- written first, NX, so this check costs no extra command.
if not redis.call('SET', KEYS[4], ARGV[6], 'NX', 'EX', tonumber(ARGV[7])) then
  return {'replay', ARGV[4]}
end

local allowed, wait_ms, kept = rate_limit_check(KEYS[1], now_ms, window_ms, limit)
if not allowed then
  redis.call('DEL', KEYS[4])
  count(KEYS[6], KEYS[7], ARGV[10], 1, tonumber(ARGV[8]))
  return {'limited', wait_ms}
end

rate_limit_record(KEYS[1], kept, now_ms, window_ms, limit)
push_job(KEYS[2], KEYS[3], ARGV[5], now_ms)
if idem_key then
  redis.call('SET', idem_key, ARGV[12], 'EX', tonumber(ARGV[13]))
end
count(KEYS[5], KEYS[7], ARGV[9], 1, tonumber(ARGV[8]))
-- Is a drain running? Running drains keep the awake key alive with their heartbeats; when it
-- is gone, this submit takes it (NX) for the wake lock, so that of many concurrent submits
-- exactly one is told to wake a drain. One command either way.
local wake = 0
local lock_ms = tonumber(ARGV[14])
if lock_ms > 0 and redis.call('SET', KEYS[8], '~wake', 'NX', 'PX', lock_ms) then wake = 1 end
return {'accepted', ARGV[4], wake}
