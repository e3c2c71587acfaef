-- nim.cache_local: the response cache's in-process backend (litellm_settings.cache_params.type:
-- local). A least-recently-used map of key -> value (both strings), bounded by the bytes of its
-- keys and values (max_bytes); each entry expires ttl seconds after it was stored, on an
-- injectable clock. One per lua_State, so one per gateway worker: workers do not share it.
--
--   local b = require("nim.cache_local").new{ max_bytes = 64 * 2^20, clock = nim.now }
--   b:set(key, value, ttl) -> true, or false when the entry alone is larger than max_bytes
--   b:get(key) -> value | nil       (a hit becomes the most recently used entry)
--   b:usage() -> bytes, entries
-- It never fails, so it never returns an error (the redis backend's get and set can).
local M = { name = "local" }
local Local = {}
Local.__index = Local

-- new{ max_bytes =, clock = } (clock: seconds, any origin)
function M.new(opts)
  -- a ring through a sentinel: head.next is the most recently used, head.prev the least
  local head = {}
  head.next, head.prev = head, head
  return setmetatable({ max_bytes = opts.max_bytes, clock = opts.clock, head = head, map = {},
    bytes = 0, count = 0 }, Local)
end

local function unlink(n)
  n.prev.next, n.next.prev = n.next, n.prev
end

local function push_front(head, n)
  n.prev, n.next = head, head.next
  head.next.prev = n
  head.next = n
end

function Local:remove(n)
  unlink(n)
  self.map[n.key] = nil
  self.bytes, self.count = self.bytes - n.size, self.count - 1
end

function Local:get(key)
  local n = self.map[key]
  if not n then return nil end
  if n.expires <= self.clock() then
    self:remove(n)
    return nil
  end
  unlink(n)
  push_front(self.head, n)
  return n.value
end

function Local:set(key, value, ttl)
  local old = self.map[key]
  if old then self:remove(old) end
  local size = #key + #value
  if size > self.max_bytes then return false end
  local head, now = self.head, self.clock()
  -- entries that expired are let go first (from the old end, where they gather), then the least
  -- recently used until the new one fits
  while head.prev ~= head and head.prev.expires <= now do self:remove(head.prev) end
  while self.bytes + size > self.max_bytes do self:remove(head.prev) end
  local n = { key = key, value = value, size = size, expires = now + ttl }
  push_front(head, n)
  self.map[key] = n
  self.bytes, self.count = self.bytes + size, self.count + 1
  return true
end

function Local:usage() return self.bytes, self.count end

return M
