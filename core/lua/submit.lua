-- One submit, in one round trip: idempotency lookup, rate limit, enqueue, status record,
-- counters. Prelude: _metrics.lua, _queue.lua, _rate_limit.lua.
-- KEYS[1] rate log of the user      KEYS[2] request queue (list)   KEYS[3] its schedule (zset)
-- KEYS[4] status record of the job  KEYS[5] today's `jobs` counter
-- KEYS[6] today's `rate_limit_blocked` counter                     KEYS[7] totals (hash)
-- KEYS[8] idempotency record (only when the request carries an Idempotency-Key)
-- ARGV[1] now (ms)   ARGV[2] window (ms)   ARGV[3] limit   ARGV[4] job id   ARGV[5] job JSON
-- ARGV[6] status record JSON   ARGV[7] status record TTL (s)   ARGV[8] counter TTL (s)
-- ARGV[9] name of the submitted counter   ARGV[10] name of the blocked counter
-- ARGV[11] body fingerprint   ARGV[12] idempotency record JSON   ARGV[13] its TTL (s)
-- ARGV[14] '1' when this call resends one whose answer was lost: the job id is the same, so
--          a stored status record means the first call landed (no extra command otherwise)
-- Returns {'accepted', job id} | {'replay', original job id} | {'conflict', ''}
--       | {'limited', wait_ms}
local now_ms, window_ms, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local idem_key = KEYS[8]

if idem_key then
  local stored = redis.call('GET', idem_key)
  if stored then
    -- A replay is answered from the record alone: not rate-limited, nothing enqueued.
    local record = cjson.decode(stored)
    if record.fingerprint ~= ARGV[11] then return {'conflict', ''} end
    return {'replay', record.jobId}
  end
end

if ARGV[14] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then
  return {'replay', ARGV[4]}
end

local allowed, wait_ms, kept = rate_limit_check(KEYS[1], now_ms, window_ms, limit)
if not allowed then
  count(KEYS[6], KEYS[7], ARGV[10], 1, tonumber(ARGV[8]))
  return {'limited', wait_ms}
end

rate_limit_record(KEYS[1], kept, now_ms, window_ms, limit)
push_job(KEYS[2], KEYS[3], ARGV[5], now_ms)
redis.call('SET', KEYS[4], ARGV[6], 'EX', tonumber(ARGV[7]))
if idem_key then
  redis.call('SET', idem_key, ARGV[12], 'EX', tonumber(ARGV[13]))
end
count(KEYS[5], KEYS[7], ARGV[9], 1, tonumber(ARGV[8]))
return {'accepted', ARGV[4]}
