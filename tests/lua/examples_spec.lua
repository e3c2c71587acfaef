-- Every example runs as docs/lua-api.md ("Examples") shows, against the fake NIM servers.
local spec = require "spec"
local h = require "helpers"
local test, eq, ok, match = spec.test, spec.eq, spec.ok, spec.match
local q, sh = h.q, h.sh
local BIN = h.nimrank

local function hosted_env()
  return ("NVIDIA_NIM_API_KEY=%s NVIDIA_NIM_RERANK_API_BASE=%s "):format(q(h.key), q(h.url))
end

test("example_h100", function()
  local out, code = sh(hosted_env() .. BIN .. " examples/h100.lua")
  eq(code, 0, "exit: " .. out)
  match(out, "^1%. %[2%]", "H100 document first")
end)

test("example_h100_with_end_of_life_model_explains", function()
  local out, code = sh(hosted_env() .. BIN
    .. " examples/h100.lua nvidia_nim/nvidia/llama-3_2-nv-rerankqa-1b-v2 2>&1")
  eq(code, 1, "exit")
  match(out, "end of life", "410 explained")
end)

test("example_ranking", function()
  local out, code = sh(hosted_env() .. BIN .. " examples/ranking.lua")
  eq(code, 0, "exit: " .. out)
  eq(#h.decode(out).results, 3, "three results")
end)

test("example_self_hosted", function()
  local out, code = sh(BIN .. " examples/self_hosted.lua " .. q(h.open_url))
  eq(code, 0, "exit: " .. out)
  match(out, "route:%s+http://127%.0%.0%.1:%d+/v1/ranking", "route printed")
  match(out, "%[0%]", "the oil document is among the results")
end)

test("example_offline", function()
  local out, code = sh(BIN .. " examples/offline.lua")
  eq(code, 0, "exit")
  match(out, "^1%. [%d.]+  Accelerated servers with H100", "H100 first")
end)

test("example_hybrid", function()
  local out, code = sh(BIN .. " examples/hybrid.lua " .. q(h.open_url) .. " 2>&1")
  eq(code, 0, "exit: " .. out)
  match(out, "^1%. [%d.]+ %[nim #1, bm25 #1%] Cast iron rusts", "both agree on the first")
  eq(select(2, out:gsub("\n", "")), 3, "top_n 3, no warning")
  -- the container down: BM25's answer alone, with a warning naming the NIM component
  out, code = sh(BIN .. " examples/hybrid.lua http://127.0.0.1:1 2>&1")
  eq(code, 0, "exit: " .. out)
  match(out, "warning: hybrid: component \"nvidia_nim/ranking/[^\"]+\" failed %(connection",
    "the warning")
  match(out, "\n1%. [%d.]+ %[bm25 #1%]", "bm25 alone")
end)

test("example_proxy_serves_the_documents_config_and_curl", function()
  -- a port of its own, so a gateway already on 4000 (the document's port) does not matter
  local port = 20000 + math.random(0, 9999)
  local out, code = sh(("PORT=%d sh examples/proxy/run.sh 2>&1"):format(port))
  eq(code, 0, "exit: " .. out)
  local answers = {}
  for line in out:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" and line:find('"results"', 1, true) then
      answers[#answers + 1] = h.decode(line)
    end
  end
  eq(#answers, 2, "the two curl answers: " .. out)
  eq(#answers[1].results, 2, "top_n 2")
  match(answers[1].results[1].document.text, "^H100", "H100 first")
  match(out, '"names":%[', "the route tenant.lua adds")
  match(out, '"route":"/rerank"', "a log line per request")
  eq(out:find("sk-1234", 1, true), nil, "the master key is never printed or logged")
  eq(out:find("nvapi-demo-key", 1, true), nil, "nor the upstream key")
end)

test("main_job_command", function()
  local out, code = sh(BIN .. " rerank --query 'What is the GPU memory bandwidth of H100 SXM?' "
    .. "--docs examples/docs.txt --top-n 3 2>/dev/null")
  eq(code, 0, "exit")
  eq(h.decode(out).results[1].index, 2, "H100 first")
end)

test("example_pipeline_offline", function()
  local out, code = sh(BIN .. " examples/pipeline.lua")
  eq(code, 0, "exit: " .. out)
  match(out, "^answered by offline %(fallback after: auth%)", "fell back without a key")
  local wiki = select(2, out:gsub("%[wiki%]", ""))
  eq(wiki, 2, "custom filter kept two per source")
end)

test("example_config_yaml", function()
  local out, code = sh(hosted_env() .. BIN .. " --config examples/config.yaml rerank -m rerank "
    .. "-q 'gpu memory bandwidth' 'cats' 'gpu memory bandwidth' 'gpu memory bandwidth' 2>&1")
  eq(code, 0, "exit: " .. out)
  local res = h.decode(out)
  eq(res.meta.model_group ~= nil, true, "routed")
  eq(#res.results, 2, "group filter dedupe applied")
  eq(type(res.results[1].probability), "number", "group filter normalize applied")
  local _, c2 = sh(BIN .. " --config examples/config.yaml -e '' 2>&1")
  eq(c2, 0, "without the key the config still loads: its offline group needs none")
  local out3, c3 = sh(BIN .. " --config examples/config.yaml rerank -m rerank --json -q gpu "
    .. "'gpu memory' cats 2>&1 >/dev/null")
  eq(c3, 0, "exit: " .. out3)
  match(out3, "fell back from rerank to offline", "the fallback is said on stderr")
  match(out3, "NVIDIA_NIM_API_KEY", "naming the missing variable")
end)

test("example_frameloop_c_host_renders_frames_while_reranking", function()
  local build = BIN:match("^(.*)/nimrank$")
  for _, mode in ipairs({ "", "--callbacks " }) do
    local out, code = sh(("%s/frameloop %s%s %s"):format(build, mode, q(h.open_url),
      q("!delay=300 what slows down a game frame?")))
    eq(code, 0, "exit: " .. out)
    match(out, "^%[%d%] %-?[%d.]+ ", "the answer arrived")
    local frames,
      late = out:match("frames rendered while reranking: (%d+), latest frame ([%d.]+) ms")
    print(("     frameloop %s: %s frames during a 300 ms request, latest %s ms late")
      :format(mode == "" and "simple" or "callbacks", frames, late))
    ok(tonumber(frames) >= 5, "frames kept coming while waiting")
    -- half the request's 300 ms: a frame held up by the network would be late by all of it
    ok(tonumber(late) < 150, "no frame was held up by the network")
  end
end)
