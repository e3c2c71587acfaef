# nimrank. `make help` lists the targets.
#
# Your CFLAGS and LDFLAGS (optimisation, debugging, sanitizers) are added to the project's own
# flags, never in place of them: `make CFLAGS=-O0` keeps -fPIC, visibility and include paths.

PREFIX   ?= /usr/local
BUILD    ?= build
CC       ?= cc
CFLAGS   ?= -O2 -g
LDFLAGS  ?=
STRICT   ?=
DESTDIR  ?=

LUA_DIR  := $(PREFIX)/share/lua/5.4
PKGS     := lua5.4 lua5.4-cjson
# gcc, libc6-dev, make: the C compiler is not assumed (without Recommends, none of the others
# brings one); named singly, not as build-essential, which an image may lack while having them.
DEB_PKGS := pkg-config gcc libc6-dev make liblua5.4-dev lua5.4 libcurl4-openssl-dev lua-cjson-dev \
            lua-cjson libmicrohttpd-dev libhiredis-dev lua-yaml curl luarocks nettle-dev \
            redis-server
# Only for the documentation: the man page (`make man`, `make install`) and the benchmark plots
# (`make bench-plots`), both checked by `make test`. `make` itself needs none of them.
DOC_PKGS := pandoc man-db groff-base gnuplot-nox
MAN_DIR  := $(PREFIX)/share/man
VERSION  := $(shell sed -n 's/.*NIMRANK_VERSION "\(.*\)"/\1/p' src/nimrank.h)
WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            $(if $(filter 1,$(STRICT)),-Werror)
# LUA_INCDIR (LuaRocks passes it) picks the Lua headers; else pkg-config's.
LUA_INCDIR ?=
NIM_CFLAGS := -std=gnu11 $(WARN) -fPIC -fvisibility=hidden -MMD -MP \
              $(if $(LUA_INCDIR),-I$(LUA_INCDIR)) $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
ALL_CFLAGS  = $(CFLAGS) $(NIM_CFLAGS)
# Programs link lua-cjson statically; nim.so links the shared library (the static archive is
# not position-independent). nim.so never links liblua: the host provides Lua. libcurl is
# loaded with dlopen on the first network call (src/curl_lazy.h), hiredis on the first Redis
# command (src/hiredis_lazy.h): nothing links them; only hiredis's headers are needed to build.
CJSON_A  := -Wl,-Bstatic -llua5.4-cjson -Wl,-Bdynamic
CJSON_SO := -llua5.4-cjson
SYS_LIBS := -ldl -lpthread -lm
# SHA-256 for the response cache's keys (src/digest.c): Nettle, which the program already loads
# through libmicrohttpd's GnuTLS; nim.so and libnimrank.a users link it too.
SYS_LIBS += -lnettle
LUA_LIBS := $(shell pkg-config --libs lua5.4 2>/dev/null)
MHD_LIBS := $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

# The gateway (`nimrank serve`) is the program's only: the library never links libmicrohttpd.
SERVE_SRC := src/serve.c src/server.c src/board.c
LIB_SRC  := $(filter-out src/main.c $(SERVE_SRC),$(wildcard src/*.c))
SERVE_OBJ := $(SERVE_SRC:src/%.c=$(BUILD)/obj/%.o)
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/lua_dir.o
C_TESTS  := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/test_*.c))
FUZZ_TARGETS := resolve answer bm25 config docs proxy redis_url
# The fuzz targets built with driver.c: they replay the seeds and kept regressions in make test.
FUZZ_REPLAY := $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz_%)
PROGRAMS := $(BUILD)/nimrank $(BUILD)/nim.so $(BUILD)/libnimrank.a $(BUILD)/fakenim \
            $(BUILD)/frameloop $(BUILD)/curl_baseline $(BUILD)/curl_fanout $(C_TESTS) \
            $(FUZZ_REPLAY)

.PHONY: all build examples deps check-deps check-doc-deps run test test-asan test-valgrind \
        test-tsan install uninstall clean bench bench-httpd bench-plots man fmt-check help rock rock-install \
        fuzz fuzz-smoke fuzz-build FORCE

# Dependencies first, then a fresh make: pkg-config's answers are read when make starts, so
# on a machine that just got its packages they must be read again.
all: check-deps
	@$(MAKE) --no-print-directory build

help:
	@echo "make             build everything into $(BUILD)/ (installs missing Debian packages as root)"
	@echo "make run         the main job: an offline rerank of examples/docs.txt (no key, no network)"
	@echo "make test        every test; ends with 'N passed, N failed'"
	@echo "make test-asan   the suite under AddressSanitizer+UBSan (build-asan/)"
	@echo "make test-valgrind  C tests, Lua specs and the C example under valgrind"
	@echo "make test-tsan   two lua_States on two threads under ThreadSanitizer (build-tsan/)"
	@echo "make fuzz-smoke  every libFuzzer target for FUZZ_SECONDS (10) each (build-fuzz/, clang)"
	@echo "make fuzz        the same for 5 minutes each"
	@echo "make bench       the benchmarks in bench/ (numbers are reported, never asserted; their"
	@echo "                 output is kept in bench/out/)"
	@echo "make bench-plots docs/img/*.png from bench/out/ (quick runs of the benches missing there)"
	@echo "make man         the man page, $(BUILD)/nimrank.1, from docs/nimrank.1.md (pandoc)"
	@echo "make install     PREFIX=$(PREFIX): bin/nimrank, lib/libnimrank.a, lib/pkgconfig/nimrank.pc,"
	@echo "                 include/nimrank.h, lib/lua/5.4/nim.so, share/lua/5.4/nim/*.lua,"
	@echo "                 share/man/man1/nimrank.1"
	@echo "make uninstall   remove what install put under PREFIX"
	@echo "make deps        install the Debian packages, the documentation's too (or print the"
	@echo "                 apt-get line)"
	@echo "make fmt-check   the style check CI runs"
	@echo "make clean       remove build trees"
	@echo "Variables: PREFIX, DESTDIR, BUILD, CC, CFLAGS, LDFLAGS, STRICT=1 (warnings are errors)"

build: $(PROGRAMS)
examples: all

deps:
	@sh .ci/deps.sh $(DEB_PKGS) $(DOC_PKGS)
check-deps:
	@sh .ci/deps.sh $(DEB_PKGS)
check-doc-deps:
	@sh .ci/deps.sh $(DOC_PKGS)

# The main job: an offline rerank with the embedded default (no key, no network).
run: all
	@$(BUILD)/nimrank rerank --query "What is the GPU memory bandwidth of H100 SXM?" \
	    --docs examples/docs.txt --top-n 3

# ---- objects -------------------------------------------------------------------------------
$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# The install prefix lives in one generated file, rewritten only when PREFIX changes, so
# `make install PREFIX=...` rebuilds exactly what embeds it.
$(BUILD)/gen/lua_dir.c: FORCE | $(BUILD)/gen
	@printf 'const char nim_lua_dir[] = "%s";\n' '$(LUA_DIR)' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
$(BUILD)/obj/lua_dir.o: $(BUILD)/gen/lua_dir.c | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/obj $(BUILD)/tests $(BUILD)/gen:
	@mkdir -p $@

-include $(wildcard $(BUILD)/obj/*.d $(BUILD)/tests/*.d $(BUILD)/*.d)

# ---- outputs -------------------------------------------------------------------------------
$(BUILD)/libnimrank.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/nim.so: $(LIB_OBJ)
	$(CC) $(CFLAGS) -shared -o $@ $^ $(CJSON_SO) $(SYS_LIBS) $(LDFLAGS) -Wl,--exclude-libs,ALL

$(BUILD)/nimrank: src/main.c $(SERVE_OBJ) $(BUILD)/libnimrank.a
	$(CC) $(ALL_CFLAGS) -o $@ src/main.c $(SERVE_OBJ) $(BUILD)/libnimrank.a $(CJSON_A) \
	    $(LUA_LIBS) $(MHD_LIBS) $(SYS_LIBS) $(LDFLAGS) -Wl,-E

# The compiled embedding example (examples/frameloop.c): a C host with its own poll loop.
$(BUILD)/frameloop: examples/frameloop.c $(BUILD)/libnimrank.a
	$(CC) $(ALL_CFLAGS) -Isrc -o $@ $< $(BUILD)/libnimrank.a $(CJSON_A) $(LUA_LIBS) \
	    $(SYS_LIBS) $(LDFLAGS)

$(BUILD)/fakenim: tests/fake/fakenim.c | $(BUILD)/obj
	$(CC) $(ALL_CFLAGS) -DFAKENIM_SCRIPT='"$(CURDIR)/tests/fake/fakenim.lua"' -o $@ $< \
	    $(CJSON_A) $(LUA_LIBS) $(MHD_LIBS) $(SYS_LIBS) $(LDFLAGS)

$(BUILD)/tests/test_%: tests/c/test_%.c $(BUILD)/libnimrank.a | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libnimrank.a $(CJSON_A) $(LUA_LIBS) $(SYS_LIBS) \
	    $(LDFLAGS)

$(BUILD)/tests/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/driver.c $(BUILD)/libnimrank.a | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -DFUZZ_LUA_DIR='"$(CURDIR)/lua"' -o $@ $< tests/fuzz/driver.c \
	    $(BUILD)/libnimrank.a $(CJSON_A) $(LUA_LIBS) $(SYS_LIBS) $(LDFLAGS)

# The man page: pandoc markdown -> roff. No smart typography: "--" stays two hyphens and
# quotes stay straight, as a command line needs. The version comes from src/nimrank.h.
man: check-doc-deps
	@$(MAKE) --no-print-directory $(BUILD)/nimrank.1
$(BUILD)/nimrank.1: docs/nimrank.1.md src/nimrank.h
	@mkdir -p $(BUILD)
	pandoc -f markdown-smart -s -t man -M footer="nimrank $(VERSION)" -o $@ docs/nimrank.1.md

# ---- tests ---------------------------------------------------------------------------------
test: all man
	@NIMRANK_SANITIZE=$(NIMRANK_SANITIZE) sh tests/run.sh $(BUILD)

# Separate build trees, so sanitizer objects never mix with the normal ones.
SAN := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined
test-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan NIMRANK_SANITIZE=1 \
	    CFLAGS="-O1 -g -fno-omit-frame-pointer $(SAN)" LDFLAGS="$(SAN)" test

test-valgrind: all
	@sh .ci/deps.sh valgrind
	@sh tests/valgrind.sh $(BUILD)

test-tsan: all
	@$(MAKE) --no-print-directory BUILD=build-tsan CFLAGS="-O1 -g -fsanitize=thread" \
	    LDFLAGS="-fsanitize=thread" build-tsan/tests/test_threads
	@sh tests/tsan.sh build-tsan

# libFuzzer (clang; Debian's libclang-rt-14-dev): the library built with fuzzer coverage and
# ASan+UBSan in build-fuzz/, one binary per target.
FUZZ_SAN := -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined
FUZZ_SECONDS ?= 10
fuzz-build: check-deps
	@sh .ci/deps.sh clang libclang-rt-14-dev
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang \
	    CFLAGS="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer-no-link $(FUZZ_SAN)" \
	    build-fuzz/libnimrank.a
	@for t in $(FUZZ_TARGETS); do \
	    clang -g -O1 -fsanitize=fuzzer $(FUZZ_SAN) $(NIM_CFLAGS) \
	        -DFUZZ_LUA_DIR='"$(CURDIR)/lua"' -o build-fuzz/fuzz_$$t tests/fuzz/fuzz_$$t.c \
	        build-fuzz/libnimrank.a $(CJSON_A) $(LUA_LIBS) $(SYS_LIBS) || exit 1; \
	done
fuzz-smoke: fuzz-build
	@sh tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)
fuzz: fuzz-build
	@sh tests/fuzz/run.sh build-fuzz 300

# The raw-libcurl baselines of bench/overhead.sh and fanout.sh: linked with libcurl itself.
$(BUILD)/curl_%: bench/curl_%.c bench/bench_util.h src/clock.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -o $@ $< $(shell pkg-config --libs libcurl) $(LDFLAGS)

# The two minimal HTTP servers of bench/httpd.sh (libmicrohttpd as the gateway drives it, and
# h2o): httpd_h2o only where Debian's libh2o-evloop-dev is installed (the script installs it).
H2O_OK   := $(shell pkg-config --exists libh2o-evloop 2>/dev/null && echo 1)
HTTPD_BENCH := $(BUILD)/httpd_mhd $(if $(H2O_OK),$(BUILD)/httpd_h2o)
bench-httpd: $(HTTPD_BENCH)
$(BUILD)/httpd_mhd: bench/httpd_mhd.c bench/httpd_common.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -std=gnu11 $(WARN) -o $@ $< $(MHD_LIBS) $(LDFLAGS)
$(BUILD)/httpd_h2o: bench/httpd_h2o.c bench/httpd_common.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -std=gnu11 $(WARN) -DH2O_USE_LIBUV=0 -o $@ $< \
	    $(shell pkg-config --libs libh2o-evloop 2>/dev/null) $(LDFLAGS)

# Each bench's output is kept in bench/out/NAME.txt (only when it ran to its end), where
# `make bench-plots` reads it.
bench: all bench-httpd
	@mkdir -p bench/out
	@for b in overhead bm25 fanout providers; do \
	    { sh bench/$$b.sh; echo $$? >bench/out/$$b.rc; } | tee bench/out/$$b.tmp; \
	    rc=$$(cat bench/out/$$b.rc); rm -f bench/out/$$b.rc; \
	    [ "$$rc" = 0 ] || { rm -f bench/out/$$b.tmp; exit 1; }; \
	    mv bench/out/$$b.tmp bench/out/$$b.txt; \
	done

# docs/img/*.png from bench/out/ (gnuplot); a bench with no output there runs quick first.
bench-plots: all check-doc-deps
	@sh bench/plots.sh

# ---- installing ----------------------------------------------------------------------------
$(BUILD)/nimrank.pc: FORCE | $(BUILD)/gen
	@sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' nimrank.pc.in >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

install: all man $(BUILD)/nimrank.pc
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
	    $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/lua/5.4 \
	    $(DESTDIR)$(LUA_DIR)/nim/providers $(DESTDIR)$(LUA_DIR)/nim/strategies \
	    $(DESTDIR)$(MAN_DIR)/man1
	install -m 755 $(BUILD)/nimrank $(DESTDIR)$(PREFIX)/bin/nimrank
	install -m 644 $(BUILD)/libnimrank.a $(DESTDIR)$(PREFIX)/lib/libnimrank.a
	install -m 644 $(BUILD)/nimrank.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/nimrank.pc
	install -m 644 src/nimrank.h $(DESTDIR)$(PREFIX)/include/nimrank.h
	install -m 755 $(BUILD)/nim.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/nim.so
	install -m 644 lua/nim/*.lua $(DESTDIR)$(LUA_DIR)/nim/
	install -m 644 lua/nim/providers/*.lua $(DESTDIR)$(LUA_DIR)/nim/providers/
	install -m 644 lua/nim/strategies/*.lua $(DESTDIR)$(LUA_DIR)/nim/strategies/
	install -m 644 $(BUILD)/nimrank.1 $(DESTDIR)$(MAN_DIR)/man1/nimrank.1

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/nimrank $(DESTDIR)$(PREFIX)/lib/libnimrank.a \
	    $(DESTDIR)$(PREFIX)/lib/pkgconfig/nimrank.pc $(DESTDIR)$(PREFIX)/include/nimrank.h \
	    $(DESTDIR)$(PREFIX)/lib/lua/5.4/nim.so $(DESTDIR)$(MAN_DIR)/man1/nimrank.1
	rm -rf $(DESTDIR)$(LUA_DIR)/nim

# LuaRocks (rockspecs/nimrank-scm-1.rockspec, make backend): nim.so and the Lua layer only.
rock:
	@$(MAKE) --no-print-directory $(BUILD)/nim.so
rock-install:
	install -d $(INST_LIBDIR) $(INST_LUADIR)/nim/providers $(INST_LUADIR)/nim/strategies
	install -m 755 $(BUILD)/nim.so $(INST_LIBDIR)/nim.so
	install -m 644 lua/nim/*.lua $(INST_LUADIR)/nim/
	install -m 644 lua/nim/providers/*.lua $(INST_LUADIR)/nim/providers/
	install -m 644 lua/nim/strategies/*.lua $(INST_LUADIR)/nim/strategies/

# ---- style ---------------------------------------------------------------------------------
# One style (STYLE.md): clang-format for C; no tabs and at most 100 columns for Lua and shell.
FMT_C   := $(wildcard src/*.c src/*.h tests/c/*.c tests/c/*.h tests/fake/*.c examples/*.c bench/*.c bench/*.h \
           tests/fuzz/*.c tests/fuzz/*.h)
FMT_TXT := $(wildcard lua/nim/*.lua lua/nim/providers/*.lua lua/nim/strategies/*.lua tests/lua/*.lua tests/lua/module/*.lua tests/fake/*.lua \
           bench/*.lua examples/*.lua examples/proxy/*.lua examples/proxy/*.sh tests/*.sh \
           tests/fuzz/*.sh tests/compat/*.sh tests/compat/*.mjs bench/*.sh bench/plots/*.gp \
           .ci/run .ci/deps.sh rockspecs/*)
fmt-check:
	@sh .ci/deps.sh clang-format
	@clang-format --dry-run --Werror $(FMT_C)
	@awk 'length > 100 { print FILENAME ":" FNR ": longer than 100 columns"; bad = 1 } \
	     /\t/ { print FILENAME ":" FNR ": tab"; bad = 1 } END { exit bad }' $(FMT_TXT)
	@echo "fmt-check: ok"

clean:
	rm -rf build build-asan build-tsan build-fuzz
