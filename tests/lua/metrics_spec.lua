-- nim.metrics: the Prometheus text format, and adding up several workers' texts.
local spec = require "spec"
local metrics = require "nim.metrics"
local test, eq, match = spec.test, spec.eq, spec.match

local function registry()
  local m = metrics.new()
  m:counter("req_total", "Requests.")
  m:gauge("in_flight", "In flight.")
  m:histogram("lat_seconds", "Latency.", { 0.1, 1 })
  return m
end

test("render_writes_help_type_and_sorted_labels", function()
  local m = registry()
  m:inc("req_total", { status = "200", route = "/rerank" })
  m:inc("req_total", { route = "/rerank", status = "200" }, 2)
  m:set("in_flight", nil, 3)
  local text = m:render()
  match(text, '# HELP req_total Requests%.\n# TYPE req_total counter\n', "help and type")
  match(text, 'req_total{route="/rerank",status="200"} 3\n', "one series, labels sorted")
  match(text, "in_flight 3\n", "a gauge without labels")
  eq(text:find("lat_seconds", 1, true), nil, "a family with no series is left out")
end)

test("histogram_buckets_are_cumulative_with_sum_and_count", function()
  local m = registry()
  for _, v in ipairs({ 0.05, 0.5, 5 }) do m:observe("lat_seconds", { route = "/r" }, v) end
  local text = m:render()
  match(text, 'lat_seconds_bucket{route="/r",le="0%.1"} 1\n', "le 0.1")
  match(text, 'lat_seconds_bucket{route="/r",le="1"} 2\n', "le 1")
  match(text, 'lat_seconds_bucket{route="/r",le="%+Inf"} 3\n', "+Inf")
  match(text, 'lat_seconds_sum{route="/r"} 5%.55\n', "sum")
  match(text, 'lat_seconds_count{route="/r"} 3\n', "count")
end)

test("label_values_are_escaped", function()
  local m = registry()
  m:inc("req_total", { model = 'a"b\\c\nd' })
  match(m:render(), 'req_total{model="a\\"b\\\\c\\nd"} 1', "quote, backslash, newline")
end)

test("merge_adds_samples_of_every_worker_and_keeps_one_header", function()
  local a, b = registry(), registry()
  a:inc("req_total", { status = "200" }, 2)
  b:inc("req_total", { status = "200" }, 3)
  b:inc("req_total", { status = "500" })
  a:observe("lat_seconds", nil, 0.05)
  b:observe("lat_seconds", nil, 0.5)
  local text = metrics.merge({ a:render(), b:render() })
  local _, helps = text:gsub("# HELP req_total", "")
  eq(helps, 1, "one HELP line")
  match(text, 'req_total{status="200"} 5\n', "added")
  match(text, 'req_total{status="500"} 1\n', "one worker's own series")
  match(text, 'lat_seconds_bucket{le="1"} 2\n', "buckets added")
  match(text, "lat_seconds_count 2\n", "counts added")
  -- every sample sits under its own family's header
  local fam_of_line, current = {}, nil
  for line in text:gmatch("[^\n]+") do
    local f = line:match("^# TYPE (%S+)")
    if f then current = f
    elseif line:sub(1, 1) ~= "#" then
      fam_of_line[#fam_of_line + 1] = { line:match("^[%w_]+"), current }
    end
  end
  for _, p in ipairs(fam_of_line) do
    eq(p[1]:sub(1, #p[2]), p[2], "sample " .. p[1] .. " under its family")
  end
end)

test("merge_of_nothing_is_empty", function()
  eq(metrics.merge({}), "", "empty")
  eq(metrics.merge({ "" }), "", "an empty text")
end)

