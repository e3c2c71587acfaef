-- nim.metrics: counters, gauges and histograms in the Prometheus text format (version 0.0.4),
-- for `nimrank serve`'s GET /metrics. Each worker keeps its own figures; render() writes them,
-- and merge() adds up the texts of several workers sample by sample (a counter, a gauge of
-- things in flight and a histogram's buckets all add), so any worker can answer for all.
--
--   local m = metrics.new()
--   m:counter("nimrank_requests_total", "Requests answered.")
--   m:inc("nimrank_requests_total", { route = "/rerank", status = "200" })
--   m:histogram("nimrank_request_seconds", "Time to answer.", { 0.005, 0.01, ... })
--   m:observe("nimrank_request_seconds", { route = "/rerank" }, 0.012)
local M = {}
local Registry = {}
Registry.__index = Registry

function M.new()
  return setmetatable({ families = {}, order = {} }, Registry)
end

local function family(self, name, kind, help, buckets)
  local f = self.families[name]
  if f then return f end
  f = { name = name, kind = kind, help = help, buckets = buckets, series = {}, keys = {} }
  self.families[name] = f
  self.order[#self.order + 1] = name
  return f
end

function Registry:counter(name, help) return family(self, name, "counter", help) end
function Registry:gauge(name, help) return family(self, name, "gauge", help) end
function Registry:histogram(name, help, buckets)
  return family(self, name, "histogram", help, buckets)
end

-- Label values are escaped as the format asks (backslash, quote, newline).
local function escape(v)
  return (tostring(v):gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

-- The series key: labels sorted by name, formatted once and reused.
local function label_text(labels)
  if not labels or next(labels) == nil then return "" end
  local names = {}
  for k in pairs(labels) do names[#names + 1] = k end
  table.sort(names)
  local parts = {}
  for i, k in ipairs(names) do parts[i] = ('%s="%s"'):format(k, escape(labels[k])) end
  return table.concat(parts, ",")
end
M.label_text = label_text

-- A series by its key (label_text's form). Callers on a hot path keep keys, not labels.
local function series_at(f, key)
  local s = f.series[key]
  if not s then
    if f.kind == "histogram" then
      s = { counts = {}, sum = 0, count = 0 } -- counts per bucket, not yet cumulative
      for i = 1, #f.buckets do s.counts[i] = 0 end
    else
      s = { value = 0 }
    end
    f.series[key] = s
    f.keys[#f.keys + 1] = key
  end
  return s
end

function Registry:inc(name, labels, by) self:inc_key(name, label_text(labels), by) end
function Registry:set(name, labels, v)
  series_at(self.families[name], label_text(labels)).value = v
end
function Registry:observe(name, labels, v) self:observe_key(name, label_text(labels), v) end

function Registry:inc_key(name, key, by)
  local s = series_at(self.families[name], key)
  s.value = s.value + (by or 1)
end

-- One bucket counted (the first that holds v); render adds them up.
function Registry:observe_key(name, key, v)
  local f = self.families[name]
  local s = series_at(f, key)
  local b = f.buckets
  for i = 1, #b do
    if v <= b[i] then
      s.counts[i] = s.counts[i] + 1
      break
    end
  end
  s.sum = s.sum + v
  s.count = s.count + 1
end

local function num(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v == math.floor(v) and v > -1e15 and v < 1e15 then return ("%d"):format(v) end
  return ("%.9g"):format(v)
end

local function with(key, extra)
  if key == "" then return "{" .. extra .. "}" end
  return "{" .. key .. "," .. extra .. "}"
end

-- render() -> the text of every family with at least one series.
function Registry:render()
  local out = {}
  for _, name in ipairs(self.order) do
    local f = self.families[name]
    if #f.keys > 0 then
      out[#out + 1] = ("# HELP %s %s\n# TYPE %s %s\n"):format(name, f.help, name, f.kind)
      for _, key in ipairs(f.keys) do
        local s = f.series[key]
        if f.kind == "histogram" then
          local cumulative = 0
          for i, le in ipairs(f.buckets) do
            cumulative = cumulative + s.counts[i]
            out[#out + 1] = ("%s_bucket%s %s\n"):format(name, with(key, ('le="%s"'):format(
              num(le))), num(cumulative))
          end
          out[#out + 1] = ("%s_bucket%s %s\n"):format(name, with(key, 'le="+Inf"'), num(s.count))
          local lbl = key == "" and "" or "{" .. key .. "}"
          out[#out + 1] = ("%s_sum%s %s\n%s_count%s %s\n"):format(name, lbl, num(s.sum), name,
            lbl, num(s.count))
        else
          out[#out + 1] = ("%s%s %s\n"):format(name, key == "" and "" or "{" .. key .. "}",
            num(s.value))
        end
      end
    end
  end
  return table.concat(out)
end

-- merge({text, ...}) -> one text: HELP/TYPE lines kept once, samples with the same name and
-- labels added. Families and samples keep the order they first appear in.
function M.merge(texts)
  local order, value, meta_lines, meta_seen, of_family = {}, {}, {}, {}, {}
  local families = {}
  for _, text in ipairs(texts) do
    for line in text:gmatch("[^\n]+") do
      local kind, fam = line:match("^# (%u+) (%S+)")
      if kind then
        if not meta_seen[line] then
          meta_seen[line] = true
          if not meta_lines[fam] then
            meta_lines[fam] = {}
            families[#families + 1] = fam
          end
          local m = meta_lines[fam]
          m[#m + 1] = line
        end
      else
        local sample, v = line:match("^(%S+%b{}) (%S+)$")
        if not sample then sample, v = line:match("^(%S+) (%S+)$") end
        v = tonumber(v)
        if sample and v then
          if not value[sample] then
            order[#order + 1] = sample
            value[sample] = 0
            local base = sample:match("^[^{]+")
            for _, suffix in ipairs({ "_bucket", "_sum", "_count" }) do
              if meta_lines[base] then break end
              if base:sub(-#suffix) == suffix and meta_lines[base:sub(1, -#suffix - 1)] then
                base = base:sub(1, -#suffix - 1)
              end
            end
            of_family[sample] = base
          end
          value[sample] = value[sample] + v
        end
      end
    end
  end
  local by_family = {}
  for _, sample in ipairs(order) do
    local f = of_family[sample]
    by_family[f] = by_family[f] or {}
    local list = by_family[f]
    list[#list + 1] = sample
  end
  local out = {}
  for _, fam in ipairs(families) do
    for _, l in ipairs(meta_lines[fam]) do out[#out + 1] = l .. "\n" end
    for _, sample in ipairs(by_family[fam] or {}) do
      out[#out + 1] = ("%s %s\n"):format(sample, num(value[sample]))
    end
    by_family[fam] = nil
  end
  for _, sample in ipairs(order) do -- samples of no declared family, if any
    if by_family[of_family[sample]] then
      out[#out + 1] = ("%s %s\n"):format(sample, num(value[sample]))
    end
  end
  return table.concat(out)
end

-- retire(kept, dead) -> what a dead worker leaves to the sums: its counters and histograms
-- added to those kept from workers before it; gauges (things in flight) go with it.
function M.retire(kept, dead)
  local gauges, out, skip = {}, {}, false
  local merged = M.merge({ kept, dead })
  for fam in merged:gmatch("# TYPE (%S+) gauge") do gauges[fam] = true end
  for line in merged:gmatch("[^\n]+") do
    local fam = line:match("^# %u+ (%S+)") or line:match("^([%w_:]+)")
    skip = gauges[fam] == true
    if not skip then out[#out + 1] = line .. "\n" end
  end
  return table.concat(out)
end

return M
