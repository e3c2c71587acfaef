/* The command line's document reader: a file's bytes in; every document must come out as
 * valid UTF-8 (so the JSON printed is valid), or the input is refused with a message. */
#include <string.h>

#include "fuzz_lua.h"

static const char *code = "local cli = require 'nim.cli'\n"
                          "return function(text)\n"
                          "  local docs, err = cli.parse_docs(text, 'fuzz', {})\n"
                          "  if not docs then return type(err) == 'string' end\n"
                          "  for _, d in ipairs(docs) do\n"
                          "    local s = type(d) == 'table' and d.text or d\n"
                          "    if type(s) == 'string' and not utf8.len(s) then return false end\n"
                          "  end\n"
                          "  local ok = pcall(require('nim.json').encode, docs)\n"
                          "  return ok\n"
                          "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_lua_run(code, data, size);
}
