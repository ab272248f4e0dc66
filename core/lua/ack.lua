-- Acknowledge a claimed batch in one round trip: every job ends in exactly one of
-- ok / retry / dead / release, its status record and the metrics move in the same script.
-- KEYS: 1 schedule zset, 2 leased hash, 3 delayed hash, 4 dead list, 5 queue list,
--       6 totals hash, 7..10 today's counters succeeded/failed/retried/dead,
--       11 today's execution-time histogram, 12 all-time histogram,
--       then per outcome i: 12+2i-1 its status record key, 12+2i its failure record key
-- ARGV: 1 now_ms, 2 job record ttl s, 3 metrics ttl s, 4 dead list cap,
--       5 the outcomes as ONE JSON array (one argument to pass, not eight per job), each
--       [id, delivery (the attempts value it was claimed with), kind, execution ms
--       ('' = none), status record JSON, job JSON for the delayed hash, dead list or queue
--       ('' = none), retry due ms, failure record JSON ('' = none)]
-- Returns: { acknowledged, stale, ok, retry, dead, release }; stale outcomes belong to a
-- lease that expired and was handed to another consumer: they change nothing, so nothing
-- is counted twice.
local now = tonumber(ARGV[1])
local job_ttl, metrics_ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local dead_cap = tonumber(ARGV[4])
local outcomes = cjson.decode(ARGV[5])
local n = #outcomes

local ids = {}
for i = 1, n do ids[i] = outcomes[i][1] end
local current = redis.call('HMGET', KEYS[2], unpack(ids))

local done, timings = {}, {}
local delayed, schedule = {}, {}
local tally = {ok = 0, retry = 0, dead = 0, release = 0}
local stale = 0
for i = 1, n do
  local o = outcomes[i]
  local delivery, kind, ms, record = tonumber(o[2]), o[3], o[4], o[5]
  local body, due, failure = o[6], o[7], o[8]
  local raw = current[i]
  if not raw or tonumber(cjson.decode(raw).attempts) ~= delivery then
    stale = stale + 1
  else
    done[#done + 1] = ids[i]
    tally[kind] = tally[kind] + 1
    if ms ~= '' then timings[#timings + 1] = tonumber(ms) end
    if record ~= '' then
      redis.call('SET', KEYS[12 + 2 * i - 1], record, 'EX', job_ttl)
    end
    if failure ~= '' then
      redis.call('SET', KEYS[12 + 2 * i], failure, 'EX', metrics_ttl)
    end
    if kind == 'retry' then
      delayed[#delayed + 1] = ids[i]
      delayed[#delayed + 1] = body
      schedule[#schedule + 1] = tonumber(due)
      schedule[#schedule + 1] = ids[i]
    elseif kind == 'dead' then
      redis.call('LPUSH', KEYS[4], body)
      redis.call('LTRIM', KEYS[4], 0, dead_cap - 1)
    elseif kind == 'release' then
      redis.call('RPUSH', KEYS[5], body)
      redis.call('ZADD', KEYS[1], 'LT', now, QUEUE_MARKER)
    end
  end
end

if #done > 0 then
  redis.call('HDEL', KEYS[2], unpack(done))
  -- Retries are re-added below with their due time; the rest leave the schedule.
  redis.call('ZREM', KEYS[1], unpack(done))
end
if #delayed > 0 then
  redis.call('HSET', KEYS[3], unpack(delayed))
  redis.call('ZADD', KEYS[1], unpack(schedule))
end
record_timings(KEYS[11], KEYS[12], timings, metrics_ttl)
count(KEYS[7], KEYS[6], 'succeeded', tally.ok, metrics_ttl)
count(KEYS[8], KEYS[6], 'failed', tally.retry + tally.dead, metrics_ttl)
count(KEYS[9], KEYS[6], 'retried', tally.retry, metrics_ttl)
count(KEYS[10], KEYS[6], 'dead', tally.dead, metrics_ttl)
return {#done, stale, tally.ok, tally.retry, tally.dead, tally.release}
