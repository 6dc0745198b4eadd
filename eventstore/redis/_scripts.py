"""The Lua scripts. Redis runs a script alone: nothing interleaves with an append.

A script checks everything before its first write, so an error reply means
nothing was written (Redis does not roll back a script's earlier writes).
"""

from __future__ import annotations

__all__ = ["APPEND", "READ_ALL"]

#: Append a batch to one stream if its head is where the writer says.
#:
#: KEYS: position counter, log, streams zset, partition zset, the stream's events.
#: ARGV: expected_sequence, the raw hash the first event chains to ("" for a new
#: stream), the stream ref, then a (raw hash, body) pair per event.
#: Returns ``{1, first_position}``, or ``{0, actual_sequence, head_hash}`` when the
#: stream's head is not ``(expected_sequence, prev hash)``: nothing was written.
APPEND = """
local expected = tonumber(ARGV[1])
local actual = -1
local head = ''
local last = redis.call('XREVRANGE', KEYS[5], '+', '-', 'COUNT', 1)
if #last > 0 then
  actual = tonumber(string.match(last[1][1], '^%d+'))
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'h' then head = fields[i + 1] end
  end
end
if actual ~= expected or head ~= ARGV[2] then
  return {0, actual, head}
end
local n = (#ARGV - 3) / 2
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
if expected == -1 then
  redis.call('ZADD', KEYS[3], first, ARGV[3])
  redis.call('ZADD', KEYS[4], first, ARGV[3])
end
for i = 1, n do
  local seq = expected + i
  local pos = first + i - 1
  redis.call('XADD', KEYS[5], string.format('%d-%d', seq, pos),
             'h', ARGV[2 + 2 * i], 'b', ARGV[3 + 2 * i])
  redis.call('XADD', KEYS[2], string.format('%d-0', pos), 'r', ARGV[3], 'q', seq)
end
return {1, first}
"""

#: A page of the global log, each event with its stream's previous hash.
#:
#: KEYS: the log. ARGV: first position, how many, the events key prefix.
#: Returns a flat array, six items per event: log entry id, stream ref,
#: sequence_id, raw hash, raw previous hash ("" for sequence 0), body. A
#: missing event (a damaged store) has ``false`` for hash and body.
READ_ALL = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local out = {}
local heads = {}
for _, entry in ipairs(entries) do
  local ref, seq = entry[2][2], tonumber(entry[2][4])
  local key = ARGV[3] .. ref
  local hash, body, prev = false, false, ''
  local got
  if seq > 0 and heads[ref] ~= nil and heads[ref][1] == seq - 1 then
    prev = heads[ref][2]
    got = redis.call('XRANGE', key, seq, seq)
  else
    got = redis.call('XRANGE', key, math.max(seq - 1, 0), seq)
    if seq > 0 and #got == 2 then
      prev = got[1][2][2]
      table.remove(got, 1)
    end
  end
  if #got == 1 and tonumber(string.match(got[1][1], '^%d+')) == seq then
    hash, body = got[1][2][2], got[1][2][4]
    heads[ref] = {seq, hash}
  end
  out[#out + 1] = entry[1]
  out[#out + 1] = ref
  out[#out + 1] = seq
  out[#out + 1] = hash
  out[#out + 1] = prev
  out[#out + 1] = body
end
return out
"""
