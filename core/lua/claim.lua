-- Claim up to a batch of jobs for one consumer, in one round trip.
-- KEYS: 1 queue list, 2 schedule zset, 3 leased hash, 4 delayed hash, 5 dead list,
--       6 totals hash, 7 today's `failed` counter, 8 today's `dead` counter
-- ARGV: 1 now_ms, 2 batch size, 3 lease_ms, 4 max attempts, 5 job record key prefix,
--       6 failed record key prefix, 7 job record ttl s, 8 metrics ttl s, 9 dead list cap,
--       10 requeue scan limit
-- Returns: { JSON array of the leased jobs (one string: one reply to parse, not one per
--           job), requeued count, dead count }
--
-- First, work whose time has come goes back to the queue: expired leases (the consumer died
-- or overran) and retries that are due. A lease that expired on the last allowed delivery
-- dead-letters the job. Then the batch is popped (RPOP: oldest first), each job's delivery
-- count goes up by one, and it is leased until now + lease_ms.
local now = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[4])
local job_prefix, failed_prefix = ARGV[5], ARGV[6]
local job_ttl, metrics_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local dead_cap = tonumber(ARGV[9])

local function record(job, status, err)
  local rec = {id = job.id, user_id = job.user_id, status = status, attempts = job.attempts,
               created_at = job.created_at, updated_at = now, last_error = err}
  redis.call('SET', job_prefix .. job.id, cjson.encode(rec), 'EX', job_ttl)
end

local function dead_letter(job, err)
  job.last_error = err
  job.dead_at = now
  local raw = cjson.encode(job)
  redis.call('LPUSH', KEYS[5], raw)
  redis.call('LTRIM', KEYS[5], 0, dead_cap - 1)
  record(job, 'dead', err)
  local failure = cjson.encode({job_id = job.id, error = err, stack = '', failed_at = now,
                   context = {attempts = job.attempts, queue = job.queue, reason = 'lease'}})
  -- `body` is the payload's JSON text: splice it in as JSON, as the drain's records have it.
  failure = string.sub(failure, 1, -2) .. ',"payload":' .. (job.body or 'null') .. '}'
  redis.call('SET', failed_prefix .. job.id, failure, 'EX', metrics_ttl)
  count(KEYS[7], KEYS[6], 'failed', 1, metrics_ttl)
  count(KEYS[8], KEYS[6], 'dead', 1, metrics_ttl)
end

local requeued, dead = 0, 0
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[10]))
for _, id in ipairs(due) do
  if id ~= QUEUE_MARKER then
    redis.call('ZREM', KEYS[2], id)
    local raw = redis.call('HGET', KEYS[3], id)
    if raw then
      redis.call('HDEL', KEYS[3], id)
      local job = cjson.decode(raw)
      job.claimed_at = nil
      if (tonumber(job.attempts) or 0) >= max_attempts then
        dead_letter(job, 'lease expired on the last allowed delivery')
        dead = dead + 1
      else
        job.last_error = 'lease expired before the job was acknowledged'
        redis.call('RPUSH', KEYS[1], cjson.encode(job))
        requeued = requeued + 1
      end
    else
      raw = redis.call('HGET', KEYS[4], id)
      if raw then
        redis.call('HDEL', KEYS[4], id)
        redis.call('RPUSH', KEYS[1], raw)
        requeued = requeued + 1
      end
    end
  end
end
if requeued > 0 then
  redis.call('ZADD', KEYS[2], 'LT', now, QUEUE_MARKER)
end

local popped = redis.call('RPOP', KEYS[1], batch)
if not popped then popped = {} end
if #popped < batch then
  redis.call('ZREM', KEYS[2], QUEUE_MARKER)
end
if #popped == 0 then
  return {'[]', requeued, dead}
end

local leased, hset, zadd = {}, {}, {}
for i, raw in ipairs(popped) do
  local ok, job = pcall(cjson.decode, raw)
  if not ok or type(job) ~= 'table' or type(job.id) ~= 'string'
      or not string.match(job.id, '^[0-9a-f]+$') or #job.id ~= 32
      or type(job.body) ~= 'string' then
    -- A foreign producer pushed something that is not one of our jobs (ours have a 32-hex
    -- id, which is safe in a key): wrap it, keep it.
    local body = raw
    if not ok then body = cjson.encode(raw) end
    job = {id = string.sub(redis.sha1hex(raw .. now .. i), 1, 32), body = body, attempts = 0,
           created_at = now, enqueued_at = now}
  end
  job.attempts = (tonumber(job.attempts) or 0) + 1
  job.claimed_at = now
  local encoded = cjson.encode(job)
  leased[#leased + 1] = encoded
  hset[#hset + 1] = job.id
  hset[#hset + 1] = encoded
  zadd[#zadd + 1] = now + lease_ms
  zadd[#zadd + 1] = job.id
end
redis.call('HSET', KEYS[3], unpack(hset))
redis.call('ZADD', KEYS[2], unpack(zadd))
return {'[' .. table.concat(leased, ',') .. ']', requeued, dead}
