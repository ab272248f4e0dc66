-- Shared queue helpers, prepended to the scripts that move jobs.
-- Keys built here come from prefixes passed by Python (core.keys) plus a 32-hex job id or a
-- SHA-1 of a wallet: never raw user input.
local QUEUE_MARKER = '~queue'

-- Push a job and mark the queue as holding work, so that the drain's idle check (one ZRANGE
-- on the schedule) sees it. LT keeps the earliest mark.
local function push_job(queue_key, schedule_key, job_json, now_ms)
  redis.call('LPUSH', queue_key, job_json)
  redis.call('ZADD', schedule_key, 'LT', now_ms, QUEUE_MARKER)
end

-- The status record at `key` (`agent:rebalance:job:<id>`), the one Lua writer of it: the
-- Python writer is core.jobs.status_record (a test compares the two). `job` is a job or a
-- stored record: both carry id, user_id, attempts and created_at.
local function write_status(key, job, status, now, ttl, err)
  local rec = {id = job.id, user_id = job.user_id or '', status = status,
               attempts = tonumber(job.attempts) or 0, created_at = job.created_at,
               updated_at = now}
  if err and err ~= '' then rec.last_error = err end
  local encoded = cjson.encode(rec)
  redis.call('SET', key, encoded, 'EX', ttl)
  return encoded
end

-- One job per wallet. The hash `busy` maps a wallet to "<holder job id>|<parked count>": the
-- holder is the one job of the wallet that may run (processing, retrying, or queued after a
-- hand-over); the wallet's other jobs wait, oldest first, in the list `<parked prefix><sha1>`.
-- Reads and writes go through `W` (a cache flushed once per script with one HSET and one
-- HDEL), so a batch costs O(1) commands on the busy hash whatever its size.
local W = {key = nil, parked_prefix = '', cache = {}, dirty = {}, pushes = 0, mark = nil}

local function wallets_init(busy_key, parked_prefix)
  W.key, W.parked_prefix = busy_key, parked_prefix
end

-- Load the holders of `wallets` (a list) not yet cached: one HMGET.
local function wallets_load(wallets)
  local missing, seen = {}, {}
  for _, w in ipairs(wallets) do
    if W.cache[w] == nil and not seen[w] then
      missing[#missing + 1] = w
      seen[w] = true
    end
  end
  if #missing == 0 then return end
  local values = redis.call('HMGET', W.key, unpack(missing))
  for i, w in ipairs(missing) do W.cache[w] = values[i] or false end
end

local function wallet_get(w)
  if W.cache[w] == nil then wallets_load({w}) end
  local v = W.cache[w]
  if not v then return nil, 0 end
  local holder, n = string.match(v, '^([^|]*)|(%d+)$')
  return holder, tonumber(n) or 0
end

local function wallet_set(w, holder, n)
  if holder then W.cache[w] = holder .. '|' .. n else W.cache[w] = false end
  W.dirty[w] = true
end

local function parked_key(w)
  return W.parked_prefix .. redis.sha1hex(w)
end

-- Try to let job `id` run for wallet `w`: true when it holds (or now takes) the wallet;
-- otherwise the job is parked behind the holder and false is returned.
local function wallet_take(w, id, raw)
  local holder, n = wallet_get(w)
  if holder == nil then
    wallet_set(w, id, 0)
    return true
  end
  if holder == id then return true end
  redis.call('RPUSH', parked_key(w), raw)
  wallet_set(w, holder, n + 1)
  return false
end

-- Job `id` ended for good (succeeded, dead, cancelled, expired): if it holds wallet `w`, the
-- wallet's oldest parked job becomes the holder and goes to the front of the queue.
local function wallet_release(w, id, queue_key, schedule_key, now)
  if not w or w == '' then return end
  local holder, n = wallet_get(w)
  if holder ~= id then return end
  while n > 0 do
    n = n - 1
    -- Oldest parked job to the RPOP side of the queue (it has waited longest): one command.
    local nxt = redis.call('LMOVE', parked_key(w), queue_key, 'LEFT', 'RIGHT')
    if not nxt then break end
    local ok, job = pcall(cjson.decode, nxt)
    if ok and type(job) == 'table' and type(job.id) == 'string' then
      wallet_set(w, job.id, n)
      W.pushes = W.pushes + 1
      W.mark = {schedule_key, now}
      return
    end
  end
  wallet_set(w, nil)
end

local function wallets_flush()
  if W.mark then  -- the queue holds handed-over jobs: one mark for all of them
    redis.call('ZADD', W.mark[1], 'LT', W.mark[2], QUEUE_MARKER)
  end
  local set, del = {}, {}
  for w in pairs(W.dirty) do
    local v = W.cache[w]
    if v then
      set[#set + 1] = w
      set[#set + 1] = v
    else
      del[#del + 1] = w
    end
  end
  if #set > 0 then redis.call('HSET', W.key, unpack(set)) end
  if #del > 0 then redis.call('HDEL', W.key, unpack(del)) end
end

-- Does the leased JSON `raw` carry delivery number `delivery`? A plain search, no decoding:
-- a key's quotes inside an encoded string are escaped, so only the top-level field matches.
local function has_delivery(raw, delivery)
  local needle = '"attempts":' .. delivery
  local s, e = string.find(raw, needle, 1, true)
  while s do
    if not string.match(string.sub(raw, e + 1, e + 1), '%d') then return true end
    s, e = string.find(raw, needle, e + 1, true)
  end
  return false
end
