-- A drain joins the running drains, or beats as one of them; it starts more drains when the
-- backlog calls for it (core/elastic.py).
-- KEYS: 1 drains zset (drain id or '~start:<token>' -> ms its entry ends), 2 awake string,
--       3 queue list
-- ARGV: 1 now ms, 2 drain id, 3 heartbeat ttl ms, 4 max parallel drains, 5 queued jobs per
--       drain before another starts, 6 ms a started drain has to join, 7 '1' join | '0' beat,
--       8 token of the start this drain fills ('' = none), 9.. fresh tokens (max parallel of
--       them) for the drains to start
-- Returns {admitted 1|0, running drains (starts in flight included), queued jobs,
--          tokens of the drains to start...}
-- A start in flight holds a place, so that concurrent drains never start a crowd; a start
-- that never joins frees it when its time is up.
local now, id, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local max_parallel, per_drain, grace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local DRAINS = KEYS[1]
local running
if ARGV[7] == '1' then
  redis.call('ZREMRANGEBYSCORE', DRAINS, '-inf', now)  -- dead drains, starts that never came
  if ARGV[8] ~= '' then redis.call('ZREM', DRAINS, '~start:' .. ARGV[8]) end
  running = redis.call('ZCARD', DRAINS)
  if running >= max_parallel then return {0, running, 0} end
  redis.call('ZADD', DRAINS, now + ttl, id)
  running = running + 1
else
  redis.call('ZADD', DRAINS, now + ttl, id)
  running = redis.call('ZCOUNT', DRAINS, now, '+inf')
end
redis.call('SET', KEYS[2], id, 'PX', ttl)
local backlog = redis.call('LLEN', KEYS[3])
local wanted = math.min(max_parallel, math.ceil(backlog / per_drain))
local reply = {1, running, backlog}
if wanted > running then
  local zadd = {}
  for i = 1, wanted - running do
    zadd[#zadd + 1] = now + grace
    zadd[#zadd + 1] = '~start:' .. ARGV[8 + i]
    reply[#reply + 1] = ARGV[8 + i]
  end
  redis.call('ZADD', DRAINS, unpack(zadd))
end
return reply
