-- Subscribe a connection to its user's job and read the job's status, atomically: every
-- change after this script is pushed to the connection, every change before it is in the
-- answer. Prelude: _ws.lua.
-- KEYS: 1 connection record, 2 job status record, 3 subscriptions hash, 4 leased hash,
--       5 schedule zset
-- ARGV: 1 connection id, 2 job id, 3 ttl s, 4 subscribers kept per job,
--       5 jobs per connection
-- Returns {'ok', record JSON, leased job JSON or false, lease deadline or false} |
--         {'gone'} (no such connection) | {'missing'} (unknown or another user's job) |
--         {'full'} (the connection follows as many jobs as it may)
local conn_id, job_id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local conn = ws_connection(redis.call('GET', KEYS[1]))
if not conn then return {'gone'} end
local raw = redis.call('GET', KEYS[2])
local ok, rec = pcall(cjson.decode, raw or '')
if not raw or not ok or type(rec) ~= 'table' or rec.user_id ~= conn.u then
  return {'missing'}
end

local known = false
for _, id in ipairs(conn.j) do
  if id == job_id then known = true end
end
if not known then
  if #conn.j >= tonumber(ARGV[5]) then return {'full'} end
  conn.j[#conn.j + 1] = job_id
  -- KEEPTTL: the record lives as long as API Gateway lets the connection live, no longer.
  redis.call('SET', KEYS[1], cjson.encode(conn), 'KEEPTTL')
end

-- The newest subscribers are kept; re-subscribing moves a connection to the end.
local others = ws_without(redis.call('HGET', KEYS[3], job_id), conn_id)
others[#others + 1] = conn_id
local first = math.max(1, #others - tonumber(ARGV[4]) + 1)
ws_store(KEYS[3], job_id, {unpack(others, first)}, ttl)
return {'ok', raw, redis.call('HGET', KEYS[4], job_id), redis.call('ZSCORE', KEYS[5], job_id)}
