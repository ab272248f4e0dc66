-- Enqueue one job and write its status record, in one round trip.
-- KEYS: 1 queue list, 2 schedule zset, 3 status record key
-- ARGV: 1 job JSON, 2 status record JSON, 3 record ttl s, 4 now_ms
push_job(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[4]))
redis.call('SET', KEYS[3], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
