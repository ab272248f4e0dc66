-- A drain leaves the running drains, and learns whether work is due (core/elastic.py).
-- KEYS: 1 drains zset, 2 awake string, 3 schedule zset of the queue
-- ARGV: 1 now ms, 2 drain id, 3 horizon ms (work due this soon counts: clocks differ a bit)
-- Returns 1 when work is due (the drain stays, or hands it over), 0 when it may go.
-- A submit either ran before this script (its job is seen here) or after it (the awake key is
-- gone when no drain is left, so that submit wakes one): no job waits for the schedule.
local now = tonumber(ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('GET', KEYS[2]) ~= '~wake' then
  redis.call('DEL', KEYS[2])  -- but a wake under way keeps its lock
end
local due = redis.call('ZRANGE', KEYS[3], '-inf', now + tonumber(ARGV[3]), 'BYSCORE', 'LIMIT', 0, 1)
if #due > 0 then return 1 end
return 0
