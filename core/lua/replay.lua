-- Put dead jobs back on the queue as new: attempts reset, last error cleared, status `queued`.
-- KEYS: 1 dead list, 2 queue list, 3 schedule zset
-- ARGV: 1 now_ms, 2 status record key prefix, 3 record ttl s, 4 '1' = every dead job,
--       5.. job ids (when not every job)
-- Returns the ids replayed. The dead list is capped, so the scan is bounded.
local now = tonumber(ARGV[1])
local prefix, ttl, all = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end

local replayed = {}
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
-- Oldest first, so that replayed jobs keep their original order in the queue.
for i = #entries, 1, -1 do
  local raw = entries[i]
  local ok, job = pcall(cjson.decode, raw)
  if ok and type(job) == 'table' and job.id and (all or wanted[job.id]) then
    redis.call('LREM', KEYS[1], 1, raw)
    job.attempts = 0
    job.last_error = nil
    job.dead_at = nil
    job.claimed_at = nil
    job.enqueued_at = now
    push_job(KEYS[2], KEYS[3], cjson.encode(job), now)
    write_status(prefix .. job.id, job, 'queued', now, ttl)
    replayed[#replayed + 1] = job.id
  end
end
return replayed
