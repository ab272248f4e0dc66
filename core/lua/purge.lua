-- Empty the dead-letter list. KEYS: 1 dead list. Returns how many jobs were dropped.
local n = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
