-- Shared helpers of the WebSocket subscription scripts (core.subscriptions).
-- A connection record is JSON `{"u": user id, "j": [job ids it follows]}`; the subscriptions
-- hash maps a job id to its subscribers' connection ids, space-separated.

-- The decoded connection record, or nil when absent or unreadable.
local function ws_connection(raw)
  if not raw then return nil end
  local ok, conn = pcall(cjson.decode, raw)
  if not ok or type(conn) ~= 'table' or type(conn.u) ~= 'string' then return nil end
  if type(conn.j) ~= 'table' then conn.j = {} end  -- cjson decodes [] and {} alike
  return conn
end

-- The connection ids of `list` (a space-separated string or false) other than `conn_id`.
local function ws_without(list, conn_id)
  local out = {}
  if list then
    for id in string.gmatch(list, '%S+') do
      if id ~= conn_id then out[#out + 1] = id end
    end
  end
  return out
end

-- Store a job's subscribers with a fresh TTL (HSET drops a field's TTL), or drop the field.
local function ws_store(subs_key, job_id, ids, ttl)
  if #ids == 0 then
    redis.call('HDEL', subs_key, job_id)
    return
  end
  redis.call('HSET', subs_key, job_id, table.concat(ids, ' '))
  redis.call('HEXPIRE', subs_key, ttl, 'FIELDS', 1, job_id)
end
