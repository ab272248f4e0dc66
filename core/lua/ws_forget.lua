-- Forget a WebSocket connection ($disconnect, or a post that found it gone).
-- Prelude: _ws.lua.
-- KEYS: 1 connection record, 2 subscriptions hash
-- ARGV: 1 connection id, 2 ttl s, 3.. job ids it may follow besides those its record names
--       (the record may have expired before the connection's last subscription)
-- Returns the number of subscriptions removed.
local conn_id, ttl = ARGV[1], tonumber(ARGV[2])
local jobs, seen = {}, {}
local conn = ws_connection(redis.call('GET', KEYS[1]))
if conn then jobs = conn.j end
for i = 3, #ARGV do jobs[#jobs + 1] = ARGV[i] end
redis.call('DEL', KEYS[1])
local removed = 0
for _, job_id in ipairs(jobs) do
  if not seen[job_id] then
    seen[job_id] = true
    local current = redis.call('HGET', KEYS[2], job_id)
    if current then
      local others = ws_without(current, conn_id)
      if #others < select(2, string.gsub(current, '%S+', '')) then removed = removed + 1 end
      ws_store(KEYS[2], job_id, others, ttl)
    end
  end
end
return removed
