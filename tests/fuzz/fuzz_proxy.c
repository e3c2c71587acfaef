/* The gateway's request handling (lua/nim/proxy.lua), fed raw requests: a first line
 * "METHOD PATH", header lines, a blank line, the body. The C server is replaced by a table
 * that records what the handler does. Invariants: every request gets exactly one answer; its
 * status is an HTTP status; its body is JSON (or the metrics text), an error one shaped
 * {"error": {message, type, param, code = the status}}; no log line carries the master key.
 * Models resolve to local/bm25 or to a closed loopback port: nothing leaves the machine. */
#include <stdlib.h>

#include "fuzz_lua.h"

static const char *code =
    "local nim = require 'nim'\n"
    "local cjson = require 'cjson'\n"
    "nim.load_config({ model_list = {\n"
    "  { model_name = 'offline', litellm_params = { model = 'local/bm25' } },\n"
    "  { model_name = 'nim', litellm_params = { model = 'nvidia_nim/nvidia/x',\n"
    "    api_base = 'http://127.0.0.1:9/v1', api_key = 'upstream-secret', timeout = 1 } } },\n"
    "  router_settings = { num_retries = 0, model_group_alias = { rerank = 'offline' } },\n"
    "  general_settings = { master_key = 'fuzz-master-key', max_request_size_mb = 1 } })\n"
    "local proxy = require 'nim.proxy'\n"
    "proxy.setup(nil)\n"
    "local answers, logs = {}, {}\n"
    "local ids = 0\n"
    "local server = {\n"
    "  respond = function(h, status, headers, body)\n"
    "    answers[#answers + 1] = { h = h, status = status, headers = headers, body = body }\n"
    "    return true end,\n"
    "  log = function(line) logs[#logs + 1] = line end,\n"
    "  pin = function() end, peers = function() return {} end,\n"
    "  draining = function() return false end,\n"
    "  stats = function() return { inflight = 0 } end,\n"
    "  same_secret = function(a, b) return a == b end,\n"
    "  time = function() return 'T' end,\n"
    "  new_id = function() ids = ids + 1; return ('%032x'):format(ids) end,\n"
    "  log_level = 0 }\n"
    "local entry = proxy.start_worker(server)\n"
    "local handle = 0\n"
    "return function(raw)\n"
    "  local head, body = raw:match('^(.-)\\r?\\n\\r?\\n(.*)$')\n"
    "  head = head or raw\n"
    "  local method, path = head:match('^(%u+) (%S+)')\n"
    "  local req = { method = method or 'POST', path = path or '/rerank', headers = {},\n"
    "    body = body or '', t0 = nim.now(), version = 'HTTP/1.1' }\n"
    "  for name, value in head:gmatch('\\n([%w%-]+):%s*([^\\r\\n]*)') do\n"
    "    req.headers[name:lower()] = value end\n"
    "  if #req.body > 1048576 then req.body, req.too_large = nil, true end\n"
    "  handle = handle + 1\n"
    "  req.handle = handle\n"
    "  answers, logs = {}, {}\n"
    "  entry.dispatch(req)\n"
    "  nim.run(5)\n"
    "  assert(#answers == 1, 'answers: ' .. #answers)\n"
    "  local a = answers[1]\n"
    "  assert(a.h == handle and math.type(a.status) == 'integer')\n"
    "  assert(a.status >= 100 and a.status <= 599)\n"
    "  if a.headers['Content-Type'] == 'application/json' then\n"
    "    local v = cjson.decode(a.body)\n"
    "    if a.status >= 400 then\n"
    "      local e = v.error\n"
    "      assert(type(e.message) == 'string' and type(e.type) == 'string')\n"
    "      assert(e.code == tostring(a.status), 'code')\n"
    "    end\n"
    "  end\n"
    "  for _, line in ipairs(logs) do\n"
    "    cjson.decode(line)\n"
    "    assert(not line:find('fuzz-master-key', 1, true), 'master key in a log line')\n"
    "    assert(not line:find('upstream-secret', 1, true), 'upstream key in a log line')\n"
    "  end\n"
    "  assert(not a.body:find('fuzz-master-key', 1, true), 'master key in an answer')\n"
    "  assert(not a.body:find('upstream-secret', 1, true), 'upstream key in an answer')\n"
    "  return true\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_lua_run(code, data, size);
}
