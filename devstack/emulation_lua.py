"""Lua for `devstack.emulation`: Upstash behaviour composed from Valkey commands, atomically.

Each constant gives its KEYS, ARGV and reply. They run through EVAL (EVAL_RO for reads, so
the read-only token's server user may run them).
"""

from __future__ import annotations

# XTRIM key MAXLEN ~ n [LIMIT l], Upstash-style. KEYS[1] stream; ARGV[1] n; ARGV[2] l (0 = no
# limit). Nothing is trimmed until at least a node's worth (100) is in excess, then exactly n
# remain (at most l entries removed). Reply: entries removed.
XTRIM_APPROX = """
local len = redis.call('XLEN', KEYS[1])
local excess = len - tonumber(ARGV[1])
if excess < 100 then return 0 end
local limit = tonumber(ARGV[2])
if limit > 0 and excess > limit then excess = limit end
return redis.call('XTRIM', KEYS[1], 'MAXLEN', '=', len - excess)
"""

# ZRANGE/ZRANGESTORE by rank with LIMIT. KEYS[1] source (KEYS[2] destination when storing);
# ARGV: start, stop, offset, count (< 0 = all), 'REV' or '', 'WITHSCORES' or ''.
# Reply: the range (ZRANGE) or the destination's size (ZRANGESTORE).
ZRANGE_RANK_LIMIT = """
local card = redis.call('ZCARD', KEYS[1])
local s, e = tonumber(ARGV[1]), tonumber(ARGV[2])
local offset, count = tonumber(ARGV[3]), tonumber(ARGV[4])
if s < 0 then s = card + s end
if e < 0 then e = card + e end
if s < 0 then s = 0 end
if e >= card then e = card - 1 end
s = s + offset
if count >= 0 and s + count - 1 < e then e = s + count - 1 end
local empty = offset < 0 or s > e
local opts = {}
if ARGV[5] ~= '' then opts[#opts + 1] = ARGV[5] end
if KEYS[2] then
  if empty then redis.call('DEL', KEYS[2]) return 0 end
  return redis.call('ZRANGESTORE', KEYS[2], KEYS[1], s, e, unpack(opts))
end
if empty then return {} end
if ARGV[6] ~= '' then opts[#opts + 1] = ARGV[6] end
return redis.call('ZRANGE', KEYS[1], s, e, unpack(opts))
"""

# SCAN that fills COUNT. ARGV: cursor, skip (entries of that cursor's page already
# returned), count, then MATCH/TYPE options. Pages are always asked with COUNT 100, so a
# page read again from the same cursor is the same page. Reply: {cursor, skip, keys}.
SCAN_FILL = """
local cursor, skip, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local options = {}
for i = 4, #ARGV do options[#options + 1] = ARGV[i] end
local out = {}
while true do
  local page = redis.call('SCAN', cursor, 'COUNT', 100, unpack(options))
  local keys = page[2]
  for i = skip + 1, #keys do
    if #out == want then return {cursor, tostring(i - 1), out} end
    out[#out + 1] = keys[i]
  end
  skip, cursor = 0, page[1]
  if cursor == '0' or #out == want then return {cursor, '0', out} end
end
"""

# BITOP DIFF|DIFF1|ANDOR|ONE (Redis 8.2). KEYS[1] destination, KEYS[2..] sources; ARGV[1] the
# operation. X is the first source, Y the others: DIFF = X and not any Y, DIFF1 = any Y and
# not X, ANDOR = X and any Y, ONE = set in exactly one source. Reply: the result's length.
BITOP_82 = """
local op = ARGV[1]
if op ~= 'ONE' and #KEYS < 3 then
  return redis.error_reply('ERR BITOP ' .. op .. ' must be called with at least two source keys.')
end
local sources, size = {}, 0
for i = 2, #KEYS do
  local value = redis.call('GET', KEYS[i]) or ''
  sources[#sources + 1] = value
  if #value > size then size = #value end
end
if size == 0 then redis.call('DEL', KEYS[1]) return 0 end
local out = {}
for p = 1, size do
  local x, any, ones, twos = string.byte(sources[1], p) or 0, 0, 0, 0
  for i = 1, #sources do
    local b = string.byte(sources[i], p) or 0
    if i > 1 then any = bit.bor(any, b) end
    twos = bit.bor(twos, bit.band(ones, b))
    ones = bit.bxor(ones, b)
  end
  local r
  if op == 'DIFF' then r = bit.band(x, bit.bnot(any))
  elseif op == 'DIFF1' then r = bit.band(bit.bnot(x), any)
  elseif op == 'ANDOR' then r = bit.band(x, any)
  else r = bit.band(ones, bit.bnot(twos)) end
  out[p] = string.char(bit.band(r, 255))
end
redis.call('SET', KEYS[1], table.concat(out))
return size
"""

# XDELEX / XACKDEL (Redis 8.2). KEYS[1] stream; ARGV[1] group to acknowledge in first ('' for
# XDELEX; a missing group is no error, as on Upstash), ARGV[2] KEEPREF|DELREF|ACKED, ARGV[3..]
# ids. Per id: -1 not in the stream, 1 deleted, 2 kept because a group still references it
# (ACKED: pending somewhere, or not yet delivered to some group). DELREF also drops the id
# from every group's pending list.
XDELEX = """
local key, group, policy = KEYS[1], ARGV[1], ARGV[2]
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-?(%d*)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end
local function after(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am > bm or (am == bm and as > bs)
end
local groups = {}
if redis.call('EXISTS', key) == 1 then
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local g = {}
    for i = 1, #info, 2 do g[info[i]] = info[i + 1] end
    groups[#groups + 1] = g
  end
end
local function referenced(id)
  for _, g in ipairs(groups) do
    if after(id, g['last-delivered-id']) then return true end
    if #redis.call('XPENDING', key, g['name'], id, id, 1) > 0 then return true end
  end
  return false
end
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if group ~= '' then redis.pcall('XACK', key, group, id) end
  if #redis.call('XRANGE', key, id, id) == 0 then
    out[#out + 1] = -1
  elseif policy == 'ACKED' and referenced(id) then
    out[#out + 1] = 2
  else
    redis.call('XDEL', key, id)
    if policy == 'DELREF' then
      for _, g in ipairs(groups) do redis.call('XACK', key, g['name'], id) end
    end
    out[#out + 1] = 1
  end
end
return out
"""

# An error reply composed by the gateway, in a form that fits pipelines and transactions.
# ARGV[1] the error text.
ERROR = "return redis.error_reply(ARGV[1])"
