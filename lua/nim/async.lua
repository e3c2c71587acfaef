-- nim.async: the scheduler behind non-blocking reranking. One per lua_State.
--
-- A task is a coroutine nim manages (nim.native.manage): inside it, nim.rerank yields its
-- nim.Transfer instead of blocking, nim.sleep yields a timer, and joins yield their tasks; the
-- scheduler resumes it when that is done. Everything else in Lua stays ordinary: a coroutine of
-- the user's own is never yielded through, and where yielding is impossible calls block.
--
--   nim.rerank_async(args [, callback]) -> nim.Request   (req:poll(), req:wait(), req:cancel())
--   nim.poll()            advance everything once, never blocking; runs callbacks
--   nim.spawn(fn, ...)    a task; nim.run([timeout]) runs tasks until all are done
--   nim.rerank_many{ {query=, documents=}, ..., concurrency = 8 } -> results, errors
local nim = require "nim"
local native = nim.native

local M = {}

local TRANSFER_MT = native.transfer_mt
local AWAIT_MT = native.await_mt -- nim.native.await's yield: any of a list of transfers
local JOIN, YIELD_SLEEP = {}, {}
local native_sleep = nim.native.sleep

local live = {}                            -- task -> true, until it ends
local uncaught = {}                        -- errors of spawned tasks, raised by run/poll
local due = {}                             -- callbacks to run: {fn, res, err} or {raise = e}
local ready = {}                           -- tasks to resume, in order
local task_of = setmetatable({}, { __mode = "k" }) -- coroutine -> task

local function now() return nim.now() end

local function current_task()
  local co, main = coroutine.running()
  if main or not coroutine.isyieldable() then return nil end
  return task_of[co]
end
M.current_task = current_task

-- Has the running task asked to be cancelled from inside itself (req:cancel() in its own
-- on_progress callback)? It ends at its next yield; work that would go on without yielding
-- (the next batch already answered) asks this instead.
function M.cancel_requested()
  local task = current_task()
  return task ~= nil and task.cancel_requested == true
end

local function cancelled_error(model)
  return native.cancelled(type(model) == "string" and model or nil)
end

-- Misuse inside a request's task comes back as fields (nim.native.protect) and is raised again
-- where the caller sees it: at the line that started, polled or waited for the request.
local MISUSE = { __tostring = function(m) return tostring(m.bad) end }

local function protected_rerank(args)
  local ok, res, err = native.protect(nim.rerank, args)
  if ok then return res, err end
  error(setmetatable({ bad = res }, MISUSE), 0)
end

local function raise_again(e, level)
  if getmetatable(e) == MISUSE then native.misuse(e.bad.fn, e.bad.field, e.bad.message) end
  error(e, level == 0 and 0 or level + 1)
end

-- Is what a task waits for (a transfer, or any of an await list) ready?
local function ready_to_resume(waiting)
  if getmetatable(waiting) == AWAIT_MT then
    for _, t in ipairs(waiting) do if t:done() then return true end end
    return false
  end
  return waiting:done()
end

local function cancel_waiting(waiting)
  if getmetatable(waiting) == AWAIT_MT then
    for _, t in ipairs(waiting) do t:cancel() end
  else
    waiting:cancel()
  end
end

local function finish(task, ok, a, b)
  live[task] = nil
  task.done = true
  if ok then task.res, task.err = a, b else task.raised = a end
  for _, parent in ipairs(task.joiners or {}) do
    parent.pending_children = parent.pending_children - 1
    if parent.pending_children == 0 then ready[#ready + 1] = parent end
  end
  task.joiners = nil
  if not ok and task.spawned and not task.joiners_seen then
    uncaught[#uncaught + 1] = a
  end
  if task.callback then -- never called from here: from poll/run, after the resumes
    due[#due + 1] = ok and { task.callback, a, b } or { raise = a }
    task.callback, task.handle = nil, nil
  end
end

-- Resumes a task and files it by what it yields next.
local function resume(task, ...)
  local waiting = task.waiting
  task.waiting, task.wake_at = nil, nil
  if coroutine.status(task.co) == "dead" then
    -- closed from outside the scheduler (coroutine.close on the task's coroutine): the task
    -- ends cancelled, and what it waited for is cancelled too
    if waiting then cancel_waiting(waiting) end
    return finish(task, true, nil, cancelled_error(task.model))
  end
  local ok, a, b = coroutine.resume(task.co, ...)
  if task.cancel_requested then -- cancelled from inside itself (an on_progress callback)
    if coroutine.status(task.co) ~= "dead" then
      if getmetatable(a) == TRANSFER_MT or getmetatable(a) == AWAIT_MT then cancel_waiting(a) end
      coroutine.close(task.co)
    end
    return finish(task, true, nil, cancelled_error(task.model))
  end
  if coroutine.status(task.co) == "dead" then return finish(task, ok, a, b) end
  if getmetatable(a) == TRANSFER_MT or getmetatable(a) == AWAIT_MT then
    if ready_to_resume(a) then
      -- settled already (nothing in the engine will wake it): straight back to the ready
      -- queue, so next_timeout() says 0 and the loop resumes it without waiting
      task.waiting = false
      ready[#ready + 1] = task
    else
      task.waiting = a
    end
  elseif a == YIELD_SLEEP then
    task.wake_at = b
  elseif a == JOIN then
    local pending = 0
    for _, child in ipairs(b) do
      if not child.done then
        pending = pending + 1
        child.joiners = child.joiners or {}
        child.joiners[#child.joiners + 1] = task
      end
    end
    for _, child in ipairs(b) do child.joiners_seen = true end
    task.pending_children = pending
    task.children = b
    if pending == 0 then ready[#ready + 1] = task end
  elseif a == nil then
    ready[#ready + 1] = task -- a plain coroutine.yield(): run again on the next round
  else
    coroutine.close(task.co)
    finish(task, false, "nim task yielded an unexpected value: " .. tostring(a))
  end
end

local function new_task(fn, ...)
  local args = table.pack(...)
  local co = coroutine.create(function() return fn(table.unpack(args, 1, args.n)) end)
  native.manage(co)
  local task = { co = co }
  task_of[co] = task
  live[task] = true
  return task
end

-- One round: moves the network, wakes what is due, resumes what is ready (once each), then
-- runs the callbacks of what finished. Returns the number of live tasks.
local function round(wait)
  if next(live) == nil and #due == 0 then
    return native.step(0) -- bare nim.Transfer handles move too
  end
  native.step(wait or 0)
  local t = now()
  for task in pairs(live) do
    if task.waiting and coroutine.status(task.co) == "dead" then
      -- closed from outside the scheduler while it waited: resume() ends it and cancels
      -- what it waited for now, not when that answers
      ready[#ready + 1] = task
    elseif task.waiting and ready_to_resume(task.waiting) then
      ready[#ready + 1] = task
      task.waiting = false
    elseif task.wake_at and task.wake_at <= t then
      ready[#ready + 1] = task
      task.wake_at = false
    end
  end
  local batch = ready
  ready = {}
  for _, task in ipairs(batch) do
    if live[task] then resume(task) end
  end
  -- Callbacks run one by one after every resume: one that raises leaves the rest for the
  -- next poll and strands no task.
  while #due > 0 do
    local d = table.remove(due, 1)
    if d.raise ~= nil then raise_again(d.raise, 0) end
    d[1](d[2], d[3])
  end
  if #uncaught > 0 then -- a spawned task raised and nobody waits for it: say so, loudly
    local err = uncaught[1]
    uncaught = {}
    error(err, 0)
  end
  return M.pending()
end

-- Pending work: each live task counts one, a task awaiting several transfers (a batched
-- call) one per transfer in flight.
function M.pending()
  local n = 0
  for task in pairs(live) do
    local w = task.waiting
    n = n + ((w and getmetatable(w) == AWAIT_MT) and math.max(1, #w) or 1)
  end
  return n
end

-- How long the scheduler may block: until the next timer, at most max.
local function next_wait(max)
  if #ready > 0 then return 0 end
  local t, wait = now(), max
  for task in pairs(live) do
    if task.wake_at then wait = math.min(wait, math.max(0, task.wake_at - t)) end
  end
  return wait
end

local function any_due()
  return #due > 0
end

local function any_transfer_pending()
  for task in pairs(live) do if task.waiting then return true end end
  return false
end

-- Runs rounds until done() or the deadline; blocks in the engine (or a sleep) between them.
local function drive(done, deadline)
  while not done() do
    local left = deadline and (deadline - now()) or math.huge
    if left <= 0 then return false end
    if next(live) == nil and not any_due() then return done() end
    local wait = next_wait(math.min(left, 0.25))
    if wait > 0 and not any_transfer_pending() then
      native_sleep(wait)
      wait = 0
    end
    round(wait)
  end
  return true
end

-- Waits for tasks: yields to the scheduler inside a task, else drives it.
local function join(tasks, timeout)
  local all_done = function()
    for _, t in ipairs(tasks) do if not t.done then return false end end
    return true
  end
  if all_done() then return true end
  if current_task() and timeout == nil then
    coroutine.yield(JOIN, tasks)
    return true
  end
  return drive(all_done, timeout and now() + timeout or nil)
end
M.join = join

-- ---- public API ------------------------------------------------------------------------

-- The rule for how long to wait (nim.sleep, nim.run, req:wait), as the binding's own waits
-- (nim.native.sleep, step, t:wait): a number >= 0 and < 1e7 -- 0 does not wait. Misuse at the
-- caller's line, naming fn and field.
local function wait_seconds(s, fn, field)
  if type(s) ~= "number" or not (s >= 0 and s < 1e7) then
    local got = type(s) ~= "number" and type(s) or s ~= s and "nan" or ("%g"):format(s)
    native.misuse(fn, field, ("must be a number of seconds >= 0 and < 1e7 (got %s)"):format(got))
  end
  return s
end

-- nim.sleep(seconds): inside a task it yields to the scheduler; elsewhere it blocks.
function M.sleep(s)
  wait_seconds(s, "nim.sleep", "seconds")
  if current_task() then
    coroutine.yield(YIELD_SLEEP, now() + s)
  else
    native_sleep(s)
  end
end

-- Seconds until the scheduler has something to do without the network (a task ready or a
-- nim.sleep due); nil when only the network (or nothing) is awaited. For nimrank_timeout().
function M.next_timeout()
  if #ready > 0 then return 0.0 end
  local t, wait = now(), nil
  for task in pairs(live) do
    if task.waiting and ready_to_resume(task.waiting) then return 0.0 end -- settled meanwhile
    if task.wake_at then
      local w = math.max(0, task.wake_at - t)
      wait = wait and math.min(wait, w) or w
    end
  end
  return wait and wait + 0.0 or nil
end

function M.poll()
  local n = round(0)
  if #ready > 0 then n = round(0) end -- tasks woken by the first round's completions
  return n
end

-- A task of the caller's function, its error raised with a traceback (from run or poll when
-- nobody waits for it).
local function spawned(fn, ...)
  local task = new_task(function(...)
    local r = table.pack(xpcall(fn, debug.traceback, ...))
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end, ...)
  task.spawned = true
  return task
end

function M.spawn(fn, ...)
  if type(fn) ~= "function" then native.misuse("nim.spawn", nil, "expected a function") end
  local task = spawned(fn, ...)
  ready[#ready + 1] = task
  return native.handle(task)
end

-- start(fn, ...) -> nim.Request: a spawned task that runs at once, until its first wait (or
-- to its end), instead of on the next round. For nim.proxy: a request that needs no network
-- is answered before the server returns to its loop.
function M.start(fn, ...)
  local task = spawned(fn, ...)
  local handle = native.handle(task)
  resume(task)
  return handle
end

-- nim.run([timeout]) -> true when every task finished, false if the time ran out.
function M.run(timeout)
  if timeout ~= nil then wait_seconds(timeout, "nim.run", "timeout") end
  return drive(function() return next(live) == nil and #due == 0 end,
    timeout and now() + timeout or nil)
end

local REQUEST = native.request_mt
REQUEST.__index = {}
REQUEST.__name = "nim.Request"

local function outcome(task)
  if task.raised then raise_again(task.raised, 0) end
  return task.res, task.err
end

-- req:poll() -> true, res | true, nil, err when done; false while pending. Never blocks.
function REQUEST.__index.poll(req)
  local task = native.task_of(req)
  task.joiners_seen = true
  if not task.done then M.poll() end
  if not task.done then return false end
  return true, outcome(task)
end

-- req:wait([seconds]) -> res | nil, err; false when the time runs out first.
function REQUEST.__index.wait(req, timeout)
  if timeout ~= nil then wait_seconds(timeout, "nim.Request:wait", "timeout") end
  local task = native.task_of(req)
  task.joiners_seen = true -- its error is raised here, not by the scheduler
  if not join({ task }, timeout) then return false end
  return outcome(task)
end

-- Stops a task: its transfer leaves the engine, the tasks it joins (a batched call's
-- batches) are stopped too, and its coroutine is closed. No callback runs.
local function cancel_task(task)
  if task.done then return end
  if task.co == coroutine.running() then -- it cannot close itself: its resume will
    task.cancel_requested = true
    task.callback, task.handle = nil, nil
    return
  end
  task.callback, task.handle = nil, nil
  if task.waiting then cancel_waiting(task.waiting) end
  for _, child in ipairs(task.children or {}) do cancel_task(child) end
  coroutine.close(task.co)
  finish(task, true, nil, cancelled_error(task.model))
end

-- req:cancel(): stops the request (and any batches it runs); no callback runs.
function REQUEST.__index.cancel(req)
  cancel_task(native.task_of(req))
end

function REQUEST.__index.done(req)
  return native.task_of(req).done == true
end

REQUEST.__close = REQUEST.__index.cancel
-- A dropped rerank_async handle cancels its request (nobody can read the answer); a dropped
-- nim.spawn handle does not: fire-and-forget is how tasks are meant to be used.
function REQUEST.__gc(req)
  if not native.task_of(req).spawned then REQUEST.__index.cancel(req) end
end
function REQUEST.__tostring(req)
  local task = native.task_of(req)
  local state = not task.done and "pending"
    or (task.err and task.err.type == "cancelled" and "cancelled") or "done"
  return ("nim.Request (%s)"):format(state)
end

-- nim.rerank_async(args [, callback]) -> nim.Request. The request starts now; misuse raises
-- now. With a callback, callback(res, err) runs from nim.poll()/nim.run() when it finishes,
-- and the request stays alive without a reference to the handle.
function M.rerank_async(args, callback)
  if type(args) ~= "table" then
    native.misuse("nim.rerank_async", nil, ("bad argument #1 (table expected, got %s)")
      :format(type(args)))
  end
  if callback ~= nil and type(callback) ~= "function" then
    native.misuse("nim.rerank_async", nil, "bad argument #2 (function expected)")
  end
  local task = new_task(protected_rerank, args)
  task.model = args.model
  local handle = native.handle(task)
  if callback then task.callback, task.handle = callback, handle end
  resume(task) -- runs until the transfer is started (or the answer is known)
  if task.raised then raise_again(task.raised, 2) end
  return handle
end

-- Misuse of one item of rerank_many becomes that item's error instead of losing the rest.
local function item_error(bad)
  return native.error({ type = "bad_request", field = bad.field,
    message = bad.field and ("%s: %s"):format(bad.field, bad.message) or bad.message })
end

local MANY_KEYS = { concurrency = true, on_progress = true }

-- nim.rerank_many{ item, ..., concurrency = 8, on_progress = fn, <shared args> }
-- -> results, errors: results[i] is item i's result or false, errors[i] its error or nil.
-- Items are tables of arguments merged over the shared ones. Order is the input order.
function M.rerank_many(spec)
  if type(spec) ~= "table" then
    native.misuse("nim.rerank_many", nil, ("bad argument #1 (table expected, got %s)")
      :format(type(spec)))
  end
  local concurrency = spec.concurrency or 8
  if math.type(concurrency) ~= "integer" or concurrency < 1 then
    native.misuse("nim.rerank_many", "concurrency", "must be an integer >= 1")
  end
  local progress = spec.on_progress
  if progress ~= nil and type(progress) ~= "function" then
    native.misuse("nim.rerank_many", "on_progress", "expected a function")
  end
  local shared = {}
  for k, v in pairs(spec) do
    if type(k) ~= "number" and not MANY_KEYS[k] then shared[k] = v end
  end
  local n = #spec
  for i = 1, n do
    if type(spec[i]) ~= "table" then
      native.misuse("nim.rerank_many", ("[%d]"):format(i), "expected a table of arguments")
    end
  end
  local results, errors = { n = n }, { n = n }
  local next_i, done = 0, 0
  local function worker()
    while next_i < n do
      next_i = next_i + 1
      local i = next_i
      local args = {}
      for k, v in pairs(shared) do args[k] = v end
      for k, v in pairs(spec[i]) do args[k] = v end
      -- Misuse of this item comes back as fields (protect), anything else it raises as a
      -- message; both stay with the item. Both yield in 5.4, so the items run concurrently.
      local res, err
      local okc, valid, r1, r2 = pcall(native.protect, nim.rerank, args)
      if not okc then
        err = item_error({ message = tostring(valid) })
      elseif not valid then
        err = item_error(r1)
      else
        res, err = r1, r2
      end
      results[i], errors[i] = res or false, err
      done = done + 1
      if progress then progress(done, n) end
    end
  end
  local workers = {}
  for w = 1, math.min(concurrency, n) do
    workers[w] = new_task(worker)
    ready[#ready + 1] = workers[w]
  end
  join(workers)
  for _, w in ipairs(workers) do if w.raised then error(w.raised, 0) end end
  return results, errors
end

return M
