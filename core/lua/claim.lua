-- Settle the batch in hand and claim the next, in ONE round trip (the drain's steady state);
-- with no outcomes it is a plain claim, with batch 0 a plain acknowledgement.
-- Prelude: _metrics.lua, _queue.lua, _notify.lua.
-- KEYS: 1 queue list, 2 schedule zset, 3 leased hash, 4 delayed hash, 5 dead list,
--       6 totals hash, 7 busy wallets hash, 8 cancelled set, 9 receipt key,
--       10..14 today's counters succeeded/failed/retried/dead/expired,
--       15 today's execution-time histogram, 16 all-time histogram,
--       17 WebSocket subscriptions hash, 18 WebSocket outbox list
-- ARGV: 1 now_ms, 2 batch size, 3 lease_ms, 4 max attempts, 5 status record key prefix,
--       6 failure record key prefix, 7 record ttl s, 8 metrics ttl s, 9 dead list cap,
--       10 requeue scan limit, 11 the job field that names a wallet ('' = no serialization),
--       12 parked list key prefix, 13 receipt ttl ms ('0' = no receipt),
--       14 the outcomes as ONE JSON array ('' = none), each [id, delivery (the attempts value
--       it was claimed with), kind ok|retry|dead|release, execution ms ('' = none), status
--       record JSON ('' = none), job JSON for the delayed hash, dead list or queue, retry due
--       ms, failure record JSON ('' = none), wallet it holds ('' = none)],
--       15 '1' when the caller pushes status changes to WebSocket subscribers
-- Returns: { JSON array of the leased jobs (one string: one reply to parse), acknowledged,
--           stale, ok, retry, dead, release, requeued, dead at lease expiry, expired,
--           cancelled skipped, parked, pushes: JSON [[job id, connection ids, record], ...] }
--          (a resend answered from its receipt has no pushes element)
--
-- Stale outcomes belong to a lease that expired and was handed to another consumer: they
-- change nothing, so nothing is counted twice. A receipt (the tallies and the ids claimed,
-- kept for the lease) lets a consumer whose answer was lost resend the same call and get the
-- same batch back, so a lost answer costs no delivery attempt.
local now = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[4])
local job_prefix, failed_prefix = ARGV[5], ARGV[6]
local job_ttl, metrics_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local dead_cap = tonumber(ARGV[9])
local wallet_field = ARGV[11]
local receipt_ms = tonumber(ARGV[13])
local Q, SCHEDULE, LEASED, DELAYED, DEAD = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local TOTALS = KEYS[6]

-- Read even on a first send: a request held up on the network may arrive after its own
-- resend, and must then change nothing either.
if receipt_ms > 0 then
  local seen = redis.call('GET', KEYS[9])
  if seen then
    local receipt = cjson.decode(seen)
    local leased = {}
    if #receipt.j > 0 then
      local ids, deliveries = {}, {}
      for id, delivery in string.gmatch(receipt.j, '(%x+):(%d+)') do
        ids[#ids + 1] = id
        deliveries[#deliveries + 1] = delivery
      end
      local current = redis.call('HMGET', LEASED, unpack(ids))
      for i = 1, #ids do
        if current[i] and has_delivery(current[i], deliveries[i]) then
          leased[#leased + 1] = current[i]
        end
      end
    end
    local reply = {'[' .. table.concat(leased, ',') .. ']'}
    for _, n in ipairs(receipt.t) do reply[#reply + 1] = n end
    return reply
  end
end

wallets_init(KEYS[7], ARGV[12])
local t = {acked = 0, stale = 0, ok = 0, retry = 0, dead = 0, release = 0, requeued = 0,
           lease_dead = 0, expired = 0, skipped = 0, parked = 0}

local function wallet_of(job)
  if wallet_field == '' then return '' end
  local w = job[wallet_field]
  if type(w) ~= 'string' then return '' end
  return w
end

-- The Lua writer of the failure record; the Python one is core.jobs.failure_record.
local function dead_letter(job, err)
  job.last_error = err
  job.dead_at = now
  local lock = job.lock
  job.lock = nil
  redis.call('LPUSH', DEAD, cjson.encode(job))
  redis.call('LTRIM', DEAD, 0, dead_cap - 1)
  write_status(job_prefix .. job.id, job, 'dead', now, job_ttl, err)
  local failure = cjson.encode({job_id = job.id, error = err, stack = '', failed_at = now,
                   context = {attempts = job.attempts, queue = job.queue,
                              user_id = job.user_id or '', outcome = 'dead'}})
  -- `body` is the payload's JSON text: splice it in as JSON, as the drain's records have it.
  failure = string.sub(failure, 1, -2) .. ',"payload":' .. (job.body or 'null') .. '}'
  redis.call('SET', failed_prefix .. job.id, failure, 'EX', metrics_ttl)
  wallet_release(lock, job.id, Q, SCHEDULE, now)
end

-- 1. The batch in hand.
local outcomes = {}
if ARGV[14] ~= '' then outcomes = cjson.decode(ARGV[14]) end
if #outcomes > 0 then
  local ids, release_wallets = {}, {}
  for i = 1, #outcomes do
    ids[i] = outcomes[i][1]
    if outcomes[i][9] ~= '' then release_wallets[#release_wallets + 1] = outcomes[i][9] end
  end
  local current = redis.call('HMGET', LEASED, unpack(ids))
  wallets_load(release_wallets)
  local done, timings, delayed, schedule = {}, {}, {}, {}
  for i = 1, #outcomes do
    local o = outcomes[i]
    local id, kind, ms, record, body, due, failure, lock =
      o[1], o[3], o[4], o[5], o[6], o[7], o[8], o[9]
    if not current[i] or not has_delivery(current[i], o[2]) then
      t.stale = t.stale + 1
    else
      done[#done + 1] = id
      notify_add(id)
      t[kind] = t[kind] + 1
      if ms ~= '' then timings[#timings + 1] = tonumber(ms) end
      if record ~= '' then redis.call('SET', job_prefix .. id, record, 'EX', job_ttl) end
      if failure ~= '' then redis.call('SET', failed_prefix .. id, failure, 'EX', metrics_ttl) end
      if kind == 'retry' then  -- it keeps its wallet: the wallet's later jobs wait for it
        delayed[#delayed + 1] = id
        delayed[#delayed + 1] = body
        schedule[#schedule + 1] = tonumber(due)
        schedule[#schedule + 1] = id
      elseif kind == 'release' then
        redis.call('RPUSH', Q, body)
        redis.call('ZADD', SCHEDULE, 'LT', now, QUEUE_MARKER)
      else
        if kind == 'dead' then
          redis.call('LPUSH', DEAD, body)
          redis.call('LTRIM', DEAD, 0, dead_cap - 1)
        end
        wallet_release(lock, id, Q, SCHEDULE, now)
      end
    end
  end
  t.acked = #done
  if #done > 0 then
    redis.call('HDEL', LEASED, unpack(done))
    -- Retries are re-added below with their due time; the rest leave the schedule.
    redis.call('ZREM', SCHEDULE, unpack(done))
  end
  if #delayed > 0 then
    redis.call('HSET', DELAYED, unpack(delayed))
    redis.call('ZADD', SCHEDULE, unpack(schedule))
  end
  record_timings(KEYS[15], KEYS[16], timings, metrics_ttl)
  count(KEYS[10], TOTALS, 'succeeded', t.ok, metrics_ttl)
  count(KEYS[11], TOTALS, 'failed', t.retry + t.dead, metrics_ttl)
  count(KEYS[12], TOTALS, 'retried', t.retry, metrics_ttl)
end

-- 2. Work whose time has come goes back to the queue: expired leases (the consumer died or
-- overran; a lease that expired on the last allowed delivery dead-letters the job) and due
-- retries. Both keep their wallet.
if batch > 0 then
  local due = redis.call('ZRANGEBYSCORE', SCHEDULE, '-inf', now, 'LIMIT', 0, tonumber(ARGV[10]))
  for _, id in ipairs(due) do
    if id == NOTIFY_MARKER then
      notify_outbox(SCHEDULE, KEYS[18])
    elseif id ~= QUEUE_MARKER then
      redis.call('ZREM', SCHEDULE, id)
      local raw = redis.call('HGET', LEASED, id)
      if raw then
        redis.call('HDEL', LEASED, id)
        notify_add(id)
        local job = cjson.decode(raw)
        job.claimed_at = nil
        if (tonumber(job.attempts) or 0) >= max_attempts then
          dead_letter(job, 'lease expired on the last allowed delivery')
          t.lease_dead = t.lease_dead + 1
        else
          job.last_error = 'lease expired before the job was acknowledged'
          redis.call('RPUSH', Q, cjson.encode(job))
          t.requeued = t.requeued + 1
        end
      else
        raw = redis.call('HGET', DELAYED, id)
        if raw then
          redis.call('HDEL', DELAYED, id)
          redis.call('RPUSH', Q, raw)
          t.requeued = t.requeued + 1
        end
      end
    end
  end
  if t.requeued > 0 then
    redis.call('ZADD', SCHEDULE, 'LT', now, QUEUE_MARKER)
  end
end

-- 3. The next batch, oldest first. A job that was cancelled or ran out of time ends here
-- without running; one whose wallet is held waits, parked, and the batch fills from others.
local leased, receipt_ids, hset, zadd = {}, {}, {}, {}
local pushes_before = W.pushes
local want, rounds, emptied = batch, 0, false

local function decode_job(raw, i)
  local ok, job = pcall(cjson.decode, raw)
  if ok and type(job) == 'table' and type(job.id) == 'string'
      and string.match(job.id, '^[0-9a-f]+$') and #job.id == 32 and type(job.body) == 'string' then
    return job
  end
  -- A foreign producer pushed something that is not one of our jobs (ours have a 32-hex id,
  -- which is safe in a key): wrap it, keep it.
  local body = raw
  if not ok then body = cjson.encode(raw) end
  return {id = string.sub(redis.sha1hex(raw .. now .. i .. rounds), 1, 32), body = body,
          attempts = 0, created_at = now, enqueued_at = now}
end

while want > 0 and rounds < 8 do
  rounds = rounds + 1
  local popped = redis.call('RPOP', Q, want)
  if not popped then
    emptied = true
    break
  end
  if #popped < want then emptied = true end
  local jobs, ids, wallets = {}, {}, {}
  for i, raw in ipairs(popped) do
    local job = decode_job(raw, i)
    jobs[i], ids[i] = job, job.id
    local w = wallet_of(job)
    if w ~= '' then wallets[#wallets + 1] = w end
  end
  local cancelled = redis.call('SMISMEMBER', KEYS[8], unpack(ids))
  wallets_load(wallets)
  for i, job in ipairs(jobs) do
    local w = wallet_of(job)
    local expires = tonumber(job.expires_at)
    if cancelled[i] == 1 then
      redis.call('SREM', KEYS[8], job.id)
      t.skipped = t.skipped + 1
      wallet_release(job.lock or w, job.id, Q, SCHEDULE, now)
    elseif expires and expires <= now then
      write_status(job_prefix .. job.id, job, 'expired', now, job_ttl,
                   'not started within its validity window')
      t.expired = t.expired + 1
      notify_add(job.id)
      wallet_release(job.lock or w, job.id, Q, SCHEDULE, now)
    elseif w ~= '' and not wallet_take(w, job.id, popped[i]) then
      t.parked = t.parked + 1
    else
      job.attempts = (tonumber(job.attempts) or 0) + 1
      job.claimed_at = now
      if w ~= '' then job.lock = w end
      local encoded = cjson.encode(job)
      leased[#leased + 1] = encoded
      notify_add(job.id)
      receipt_ids[#receipt_ids + 1] = job.id .. ':' .. job.attempts
      hset[#hset + 1] = job.id
      hset[#hset + 1] = encoded
      zadd[#zadd + 1] = now + lease_ms
      zadd[#zadd + 1] = job.id
      want = want - 1
    end
  end
  if emptied then break end
end
-- An empty queue loses its mark, unless a wallet hand-over just pushed a job back.
if emptied and W.pushes == pushes_before then
  redis.call('ZREM', SCHEDULE, QUEUE_MARKER)
end
if #hset > 0 then
  redis.call('HSET', LEASED, unpack(hset))
  redis.call('ZADD', SCHEDULE, unpack(zadd))
end
wallets_flush()
count(KEYS[13], TOTALS, 'dead', t.dead + t.lease_dead, metrics_ttl)
count(KEYS[11], TOTALS, 'failed', t.lease_dead, metrics_ttl)
count(KEYS[14], TOTALS, 'expired', t.expired, metrics_ttl)

local tally = {t.acked, t.stale, t.ok, t.retry, t.dead, t.release, t.requeued, t.lease_dead,
               t.expired, t.skipped, t.parked}
if receipt_ms > 0 and (#outcomes > 0 or #receipt_ids > 0) then
  redis.call('SET', KEYS[9], cjson.encode({t = tally, j = table.concat(receipt_ids, ',')}),
             'PX', receipt_ms)
end
local reply = {'[' .. table.concat(leased, ',') .. ']'}
for _, n in ipairs(tally) do reply[#reply + 1] = n end
reply[#reply + 1] = notify_collect(ARGV[15] == '1', KEYS[17], job_prefix)
return reply
