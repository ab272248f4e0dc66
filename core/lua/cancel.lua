-- Cancel a job for its owner, in one round trip. Prelude: _metrics.lua, _queue.lua.
-- KEYS: 1 status record, 2 queue list, 3 schedule zset, 4 leased hash, 5 delayed hash,
--       6 cancelled set, 7 busy wallets hash, 8 totals hash, 9 today's `cancelled` counter,
--       10 WebSocket subscriptions hash, 11 WebSocket outbox list
-- ARGV: 1 job id, 2 user id, 3 now_ms, 4 record ttl s, 5 metrics ttl s, 6 parked key prefix,
--       7 outbox cap
-- Returns {'cancelled' | 'already' | 'conflict' | 'processing' | 'missing', record JSON,
--          leased job JSON (only for 'processing')}
--
-- A job waiting in the delayed hash, or whose lease expired (its consumer is gone), is taken
-- out at once. A job in the queue list or parked behind its wallet's holder cannot be found
-- there without a scan: its id joins the cancelled set, and the claim that pops it ends it
-- there without running it. A job whose lease is running is `processing`: too late.
local id, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local raw = redis.call('GET', KEYS[1])
if not raw then return {'missing', ''} end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' or rec.user_id ~= user then return {'missing', ''} end
if rec.status == 'cancelled' then return {'already', raw} end
if rec.status == 'succeeded' or rec.status == 'dead' or rec.status == 'expired' then
  return {'conflict', raw}
end

wallets_init(KEYS[7], ARGV[6])
local held = redis.call('HGET', KEYS[4], id)
local source = KEYS[4]
if held then
  local lease_ends = tonumber(redis.call('ZSCORE', KEYS[3], id))
  if lease_ends and lease_ends > now then return {'processing', raw, held} end
else
  held = redis.call('HGET', KEYS[5], id)
  source = KEYS[5]
end
if held then
  redis.call('HDEL', source, id)
  redis.call('ZREM', KEYS[3], id)
  local job = cjson.decode(held)
  wallet_release(job.lock, id, KEYS[2], KEYS[3], now)
  wallets_flush()
else
  redis.call('SADD', KEYS[6], id)
end

local encoded = write_status(KEYS[1], rec, 'cancelled', now, tonumber(ARGV[4]))
count(KEYS[9], KEYS[8], 'cancelled', 1, tonumber(ARGV[5]))
-- The status route has nothing to post with: the change waits in the outbox, and the `~notify`
-- member of the schedule makes the next drain claim take it (and push it) at once.
local conns = redis.call('HGET', KEYS[10], id)
if conns then
  redis.call('LPUSH', KEYS[11], cjson.encode({id, conns, encoded}))
  redis.call('LTRIM', KEYS[11], 0, tonumber(ARGV[7]) - 1)
  redis.call('ZADD', KEYS[3], 'LT', now, '~notify')
end
return {'cancelled', encoded}
