/// History in Redis: per stream (a room, or a user's inbox) a hash `:s` with its epoch (`e`) and
/// top offset (`o`), and a list `:h` of its last messages, each the record that was published.
/// Both keys carry the stream's hash tag, like its channel, so one script may touch all three.
///
/// One script numbers, keeps and publishes a message in one step, so offsets are gapless and
/// every node receives a stream's messages in offset order. The epoch is made by the first
/// writer or reader of a stream that has none (a node's random candidate), so it changes only
/// when Redis lost the stream: a restart without persistence, or a stream nobody wrote to for
/// its lifetime (`HistoryPolicy.lifetimeSeconds`).
enum HistoryScripts {
    /// Lua helpers: a big-endian i64, and a u16-length-prefixed string (the record format).
    private static let helpers = """
        local function be64(n)
          local bytes = {}
          for i = 8, 1, -1 do bytes[i] = n % 256; n = math.floor(n / 256) end
          return string.char(unpack(bytes))
        end
        local function str(s) return string.char(math.floor(#s / 256), #s % 256) .. s end
        local function epoch_of(meta, log, candidate, lifetime)
          local epoch = redis.call('HGET', meta, 'e')
          if not epoch then
            epoch = candidate
            redis.call('HSET', meta, 'e', epoch, 'o', 0)
            redis.call('PEXPIRE', meta, lifetime)
            -- A log without its hash belongs to a lost epoch.
            redis.call('DEL', log)
          end
          return epoch
        end
        """

    /// KEYS: meta, log, channel. ARGV: the record without its position (version, kind, rest),
    /// a candidate epoch, size, TTL (ms), lifetime (ms). Puts the position after the record's
    /// first two bytes, keeps the record (trimmed to size, expiring after the TTL), publishes
    /// it, and returns the offset.
    static let append =
        helpers + "\n" + """
            local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[2], ARGV[5])
            local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
            local record = string.sub(ARGV[1], 1, 2) .. str(epoch) .. be64(offset) .. string.sub(ARGV[1], 3)
            local size = tonumber(ARGV[3])
            if size > 0 then
              redis.call('RPUSH', KEYS[2], record)
              redis.call('LTRIM', KEYS[2], -size, -1)
              redis.call('PEXPIRE', KEYS[2], ARGV[4])
            end
            redis.call('PEXPIRE', KEYS[1], ARGV[5])
            redis.call('SPUBLISH', KEYS[3], record)
            return offset
            """

    /// KEYS: meta, log. ARGV: a candidate epoch, lifetime (ms), after (an offset, or empty for
    /// the last ones), limit. Returns {epoch, top, {records...}} (no records for limit 0).
    static let read =
        helpers + "\n" + """
            local epoch = epoch_of(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
            local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
            local limit = tonumber(ARGV[4])
            if limit <= 0 then return {epoch, top, {}} end
            local length = redis.call('LLEN', KEYS[2])
            local from
            if ARGV[3] == '' then
              from = length - limit
            else
              from = tonumber(ARGV[3]) + 1 - (top - length + 1)
            end
            if from < 0 then from = 0 end
            return {epoch, top, redis.call('LRANGE', KEYS[2], from, from + limit - 1)}
            """
}
