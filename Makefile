# nimrank: `make` builds build/nimrank, build/nim.so and build/libnimrank.a.
# `make deps` installs missing Debian packages (as root) or prints the apt-get line.
# `make test` runs every test; `make test-asan` the same under AddressSanitizer+UBSan;
# `make test-valgrind` the C tests and a Lua spec run under valgrind. STRICT=1 adds -Werror.
# `make install PREFIX=...`: bin/nimrank, lib/libnimrank.a, include/nimrank.h,
# lib/lua/5.4/nim.so and share/lua/5.4/nim/*.lua (Lua's standard module paths).

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
PKGS     := lua5.4 libcurl lua5.4-cjson
DEB_PKGS := pkg-config liblua5.4-dev lua5.4 libcurl4-openssl-dev lua-cjson-dev lua-cjson \
            libmicrohttpd-dev lua-yaml curl
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
OPT      ?= -O2 -g
STRICT   ?=
WERROR   := $(if $(filter 1,$(STRICT)),-Werror)
CFLAGS   ?=
CFLAGS   += -std=gnu11 $(OPT) $(WARN) $(WERROR) $(EXTRA_CFLAGS) -fPIC -fvisibility=hidden \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
            -DNIMRANK_LUA_DIR='"$(PREFIX)/share/lua/5.4"'
LDFLAGS  += $(EXTRA_LDFLAGS)
# Programs link lua-cjson statically; nim.so links the shared library (the static archive is
# not position-independent). nim.so never links liblua: the host provides Lua.
CJSON_A  := -Wl,-Bstatic -llua5.4-cjson -Wl,-Bdynamic
CJSON_SO := -llua5.4-cjson
# libcurl is loaded with dlopen on the first network call (src/curl_lazy.h): nothing links it.
CURL_LIBS:= -ldl -lpthread
LUA_LIBS := $(shell pkg-config --libs lua5.4 2>/dev/null)

LIB_SRC  := $(filter-out src/main.c,$(wildcard src/*.c))
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o)
HDRS     := $(wildcard src/*.h)

C_TESTS  := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))

.PHONY: all build examples deps check-deps run test test-asan test-valgrind install uninstall \
        clean bench fmt-check

# Dependencies first, then a fresh make: pkg-config's answers are read when make starts, so
# on a machine that just got its packages they must be read again.
all: check-deps
	@$(MAKE) --no-print-directory build

build: $(BUILD)/nimrank $(BUILD)/nim.so $(BUILD)/libnimrank.a $(BUILD)/fakenim $(C_TESTS) \
       $(BUILD)/frameloop

# The compiled embedding example (examples/frameloop.c): a C host with its own poll loop.
examples: all
$(BUILD)/frameloop: examples/frameloop.c $(BUILD)/libnimrank.a src/nimrank.h
	$(CC) $(CFLAGS) -Isrc -o $@ examples/frameloop.c $(BUILD)/libnimrank.a $(CJSON_A) \
	    $(CURL_LIBS) $(LUA_LIBS) -lm -ldl $(LDFLAGS) -Wl,-E

# The main job: an offline rerank with the embedded default (no key, no network).
run: all
	@$(BUILD)/nimrank rerank --query "What is the GPU memory bandwidth of H100 SXM?" \
	    --docs examples/docs.txt --top-n 3

deps:
	@sh .ci/deps.sh $(DEB_PKGS)

# Quietly make sure the build can find its libraries; on a fresh machine this installs them.
check-deps:
	@sh .ci/deps.sh $(DEB_PKGS)

$(BUILD)/obj/%.o: src/%.c $(HDRS) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj $(BUILD)/tests:
	@mkdir -p $@

$(BUILD)/libnimrank.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# The module links libcurl and lua-cjson, never liblua: the host provides Lua.
$(BUILD)/nim.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(CJSON_SO) $(CURL_LIBS) -lm $(LDFLAGS) -Wl,--exclude-libs,ALL

$(BUILD)/nimrank: src/main.c $(BUILD)/libnimrank.a $(HDRS)
	$(CC) $(CFLAGS) -o $@ src/main.c $(BUILD)/libnimrank.a $(CJSON_A) $(CURL_LIBS) \
	    $(LUA_LIBS) -lm -ldl $(LDFLAGS) -Wl,-E

$(BUILD)/fakenim: tests/fake/fakenim.c | $(BUILD)/obj
	$(CC) $(CFLAGS) -DFAKENIM_SCRIPT='"$(CURDIR)/tests/fake/fakenim.lua"' -o $@ $< \
	    $(CJSON_A) $(LUA_LIBS) $(shell pkg-config --libs libmicrohttpd) \
	    -lpthread -lm -ldl $(LDFLAGS)

$(BUILD)/tests/test_%: tests/c/test_%.c $(BUILD)/libnimrank.a tests/c/ctest.h | $(BUILD)/tests
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libnimrank.a $(CJSON_A) $(CURL_LIBS) $(LUA_LIBS) \
	    -lm -ldl $(LDFLAGS)

test: all
	@NIMRANK_SANITIZE=$(NIMRANK_SANITIZE) sh tests/run.sh $(BUILD)

# A separate build tree, so sanitizer objects never mix with the normal ones.
test-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	    EXTRA_LDFLAGS="-fsanitize=address,undefined" NIMRANK_SANITIZE=1 test

test-valgrind: all
	@sh tests/valgrind.sh $(BUILD)

bench: all
	@sh bench/overhead.sh
	@sh bench/bm25.sh
	@sh bench/fanout.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	    $(DESTDIR)$(PREFIX)/lib/lua/5.4 $(DESTDIR)$(PREFIX)/share/lua/5.4/nim
	install -m 755 $(BUILD)/nimrank $(DESTDIR)$(PREFIX)/bin/nimrank
	install -m 644 $(BUILD)/libnimrank.a $(DESTDIR)$(PREFIX)/lib/libnimrank.a
	install -m 644 src/nimrank.h $(DESTDIR)$(PREFIX)/include/nimrank.h
	install -m 755 $(BUILD)/nim.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/nim.so
	install -m 644 lua/nim/*.lua $(DESTDIR)$(PREFIX)/share/lua/5.4/nim/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/nimrank $(DESTDIR)$(PREFIX)/lib/libnimrank.a \
	    $(DESTDIR)$(PREFIX)/include/nimrank.h $(DESTDIR)$(PREFIX)/lib/lua/5.4/nim.so
	rm -rf $(DESTDIR)$(PREFIX)/share/lua/5.4/nim

# One style (STYLE.md): clang-format for C; no tabs and at most 100 columns for Lua and shell.
FMT_C   := $(wildcard src/*.c src/*.h tests/c/*.c tests/c/*.h tests/fake/*.c examples/*.c bench/*.c)
FMT_TXT := $(wildcard lua/nim/*.lua tests/lua/*.lua tests/lua/module/*.lua tests/fake/*.lua \
           bench/*.lua examples/*.lua tests/*.sh bench/*.sh .ci/run .ci/deps.sh)
fmt-check:
	@clang-format --dry-run --Werror $(FMT_C)
	@awk 'length > 100 { print FILENAME ":" FNR ": longer than 100 columns"; bad = 1 } \
	     /\t/ { print FILENAME ":" FNR ": tab"; bad = 1 } END { exit bad }' $(FMT_TXT)
	@echo "fmt-check: ok"

clean:
	rm -rf build build-asan
