/**
 * The Lua scripts of the Redis edge state (./redis-state.ts). Each runs atomically in Redis, so what
 * several instances do at once sums correctly, and each is one round trip. Times are the caller's epoch
 * ms (ARGV), so they can be tested with a fixed clock; instances keep their clocks in step (NTP).
 * Numbers leave Lua as strings (a Lua number returned to Redis loses its fraction).
 *
 * Keys (P = state.key_prefix, default `postern:`):
 *   P blocks          ZSET address -> until (epoch ms): the block list, longest-lasting kept
 *   P blocks:info     HASH address -> "reason strikes"
 *   P blocks:ver      counter, bumped on every change of the list, and published on the channel of the
 *                     same name (instances subscribe and re-read on a message)
 *   P strikes:ADDR    auto-blocks of ADDR in a row; expires 2 x max_duration_ms after the last
 *   P fail:login:ADDR / P fail:proto:ADDR   ZSET of failure times (the sliding window); expires after it
 *   P rate:client:ADDR / P rate:listener:NAME   HASH {t tokens, ts ms}: a token bucket; expires when full
 * Every key but blocks:ver has a TTL (blocks and blocks:info expire with their last entry).
 */

/** Shared by the scripts that write the block list: ARGV from `base` = address, until, reason, strikes, now, maxEntries. */
const PUT = `
local function put(addr, untilMs, reason, strikes, now, maxEntries)
  redis.call('ZADD', KEYS[1], untilMs, addr)
  redis.call('HSET', KEYS[2], addr, reason .. ' ' .. strikes)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
  if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
    redis.call('HDEL', KEYS[2], unpack(gone))
  end
  local n = redis.call('ZCARD', KEYS[1])
  if n > maxEntries then
    local extra = redis.call('ZRANGE', KEYS[1], 0, n - maxEntries - 1)
    for i = 1, #extra, 1000 do
      local part = {unpack(extra, i, math.min(i + 999, #extra))}
      redis.call('ZREM', KEYS[1], unpack(part))
      redis.call('HDEL', KEYS[2], unpack(part))
    end
  end
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #last == 2 then
    redis.call('PEXPIREAT', KEYS[1], last[2])
    redis.call('PEXPIREAT', KEYS[2], last[2])
  end
  local v = redis.call('INCR', KEYS[3])
  -- pcall: an ACL without PUBLISH on the channel never fails the write (its instances read on the clock)
  redis.pcall('PUBLISH', KEYS[3], v)
end
`;

/**
 * blockPut: KEYS blocks, info, ver; ARGV address, until, reason, strikes, now, maxEntries.
 * A manual block or a local block written after an outage. Returns 1.
 */
export const BLOCK_PUT = `${PUT}
put(ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
return 1
`;

/** blockRemove: KEYS blocks, info, ver; ARGV address. Returns 1 when it was blocked. */
export const BLOCK_REMOVE = `
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if n > 0 then redis.pcall('PUBLISH', KEYS[3], redis.call('INCR', KEYS[3])) end
return n
`;

/**
 * blockList: KEYS blocks, info, ver; ARGV now, max. Returns {ver, addr1, until1, info1, ...}, the
 * longest-lasting first, blocks ended by `now` left out.
 */
export const BLOCK_LIST = `
local ver = redis.call('GET', KEYS[3]) or '0'
local rows = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {ver}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], rows[i]) or 'manual 0'
end
return out
`;

/**
 * note: KEYS blocks, info, ver, events, strikes; ARGV address, now, count, withinMs, durationMs,
 * maxDurationMs, reason, maxEntries, member. count 0 = block at once (an auto_block rule).
 * A failure joins the window (failures at or before now - withinMs fall out; at most `count` kept);
 * reaching `count` empties the window and blocks: strikes + 1 (forgotten 2 x maxDurationMs after the
 * last block), duration = durationMs x 2^(strikes-1), at most maxDurationMs.
 * Returns {} (no block) or {until, strikes}.
 */
export const NOTE = `${PUT}
local addr = ARGV[1]
local now = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local within = tonumber(ARGV[4])
local duration = tonumber(ARGV[5])
local maxDuration = tonumber(ARGV[6])
if count > 0 then
  redis.call('ZADD', KEYS[4], now, ARGV[9])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - within)
  local n = redis.call('ZCARD', KEYS[4])
  if n > count then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, n - count - 1) end
  if n < count then
    redis.call('PEXPIRE', KEYS[4], within)
    return {}
  end
  redis.call('DEL', KEYS[4])
end
local strikes = tonumber(redis.call('GET', KEYS[5]) or '0') + 1
redis.call('SET', KEYS[5], strikes, 'PX', 2 * maxDuration)
local d = math.min(maxDuration, duration * 2 ^ math.min(strikes - 1, 40))
local untilMs = now + d
put(addr, untilMs, ARGV[7], strikes, now, tonumber(ARGV[8]))
return {tostring(untilMs), tostring(strikes)}
`;

/**
 * take: KEYS the buckets (listener first, then client); ARGV now, mode, then per key perSecond, burst.
 * mode `take`: exact, a bucket without a whole token refuses (and the later ones are not touched).
 * mode `debit`: the local view already admitted the connection; one token comes off every bucket,
 * into debt down to -burst (which later refills first).
 * Returns {refusedIndex (0 = admitted), tokens of each bucket touched...}.
 */
export const TAKE = `
local now = tonumber(ARGV[1])
local mode = ARGV[2]
local out = {'0'}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[1 + 2 * i])
  local burst = tonumber(ARGV[2 + 2 * i])
  local h = redis.call('HMGET', key, 't', 'ts')
  local t = tonumber(h[1])
  local ts = tonumber(h[2])
  if t == nil or ts == nil then
    t = burst
    ts = now
  end
  if now > ts then
    t = math.min(burst, t + (now - ts) / 1000 * rate)
    ts = now
  end
  local refused = mode == 'take' and t < 1
  if not refused then t = math.max(-burst, t - 1) end
  redis.call('HSET', key, 't', tostring(t), 'ts', tostring(ts))
  redis.call('PEXPIRE', key, math.ceil((burst - t) / rate * 1000) + 1000)
  out[#out + 1] = tostring(t)
  if refused then
    out[1] = tostring(i)
    return out
  end
end
return out
`;
