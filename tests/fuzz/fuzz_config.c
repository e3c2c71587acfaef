/* The config loader: YAML bytes in. Any error is fine; a crash, a hang (libFuzzer's -timeout)
 * or memory blowing up (-rss_limit_mb) is a finding. */
#include <string.h>

#include "fuzz_lua.h"

static const char *code = "local config = require 'nim.config'\n"
                          "return function(text)\n"
                          "  local ok, err = pcall(config.load_yaml, text, 'fuzz.yaml')\n"
                          "  return ok or type(err) == 'string'\n"
                          "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fuzz_lua_run(code, data, size);
}
