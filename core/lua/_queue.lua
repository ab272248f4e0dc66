-- Shared queue helper: push a job and mark the queue as holding work, so that the drain's
-- idle check (one ZRANGE on the schedule) sees it. LT keeps the earliest mark.
local QUEUE_MARKER = '~queue'

local function push_job(queue_key, schedule_key, job_json, now_ms)
  redis.call('LPUSH', queue_key, job_json)
  redis.call('ZADD', schedule_key, 'LT', now_ms, QUEUE_MARKER)
end
