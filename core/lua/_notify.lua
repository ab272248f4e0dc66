-- WebSocket pushes, prepended to the claim script (core.push posts what it returns).
-- The script notes every job whose status it changes (`notify_add`); at the end ONE HMGET on
-- the subscriptions hash finds the few that someone listens to, and ONE MGET reads their
-- status records as the script left them. A batch nobody listens to costs the HMGET alone.
-- Changes made elsewhere (a cancel) wait in the outbox; the `~notify` member of the schedule
-- makes the next claim take them (`notify_outbox`), so an idle drain pays nothing for it.
local NOTIFY_MARKER = '~notify'
local N = {ids = {}, seen = {}, out = {}}

local function notify_add(id)
  if not N.seen[id] then
    N.seen[id] = true
    N.ids[#N.ids + 1] = id
  end
end

-- Take the outbox: its entries are ready-made JSON `[job id, connection ids, record]`.
local function notify_outbox(schedule_key, outbox_key)
  redis.call('ZREM', schedule_key, NOTIFY_MARKER)
  local items = redis.call('LRANGE', outbox_key, 0, -1)
  redis.call('DEL', outbox_key)
  for _, item in ipairs(items) do N.out[#N.out + 1] = item end
end

-- The JSON array of `[job id, connection ids, record JSON]` to push; '[]' when `enabled` is
-- false (the caller has nobody to post with: pending outbox entries are dropped).
local function notify_collect(enabled, subs_key, job_prefix)
  if not enabled then return '[]' end
  if #N.ids > 0 then
    local conns = redis.call('HMGET', subs_key, unpack(N.ids))
    local hit, record_keys = {}, {}
    for i, id in ipairs(N.ids) do
      if conns[i] then
        hit[#hit + 1] = {id, conns[i]}
        record_keys[#record_keys + 1] = job_prefix .. id
      end
    end
    if #hit > 0 then
      local records = redis.call('MGET', unpack(record_keys))
      for i, h in ipairs(hit) do
        N.out[#N.out + 1] = cjson.encode({h[1], h[2], records[i] or ''})
      end
    end
  end
  return '[' .. table.concat(N.out, ',') .. ']'
end
