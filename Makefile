# promscrape: the developer entry point. See README.md for the two commands
# that matter (make demo, make check); the rest are the habits in STYLE.md.
#
# Variants share one rule set: a variant is this Makefile run again with
# another BUILD folder and extra flags (make asan -> BUILD=build/asan).

BUILD ?= build
CC ?= cc
CLANG ?= clang
LUA ?= lua5.4
BUSTED ?= /usr/bin/busted

# Lua headers only: the module is never linked against liblua.
LUA_PC ?= $(shell for p in lua5.4 lua-5.4 lua54 lua; do \
	pkg-config --exists $$p 2>/dev/null && { echo $$p; break; }; done)
LUA_CFLAGS := $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null)
DEP_PC := libpcre2-8 libcurl libxxhash
DEP_CFLAGS := $(shell pkg-config --cflags $(DEP_PC) 2>/dev/null)
DEP_LIBS := $(shell pkg-config --libs $(DEP_PC) 2>/dev/null) -lsnappy -lm -pthread

WARN := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes \
	-Wmissing-prototypes -Wvla -Wformat=2
WERROR ?= -Werror
OPT ?= -O2 -g
SAN ?=
CFLAGS_ALL = $(WARN) $(WERROR) $(OPT) $(SAN) -fPIC -D_POSIX_C_SOURCE=200809L \
	-Isrc -Isrc/lua $(DEP_CFLAGS)

CORE_SRC := $(sort $(wildcard src/ps_*.c))
LUA_SRC := $(sort $(wildcard src/lua/lps_*.c))
CORE_OBJ := $(CORE_SRC:src/%.c=$(BUILD)/obj/%.o)
LUA_OBJ := $(LUA_SRC:src/lua/%.c=$(BUILD)/obj/lua/%.o)
HDRS := $(wildcard src/*.h src/lua/*.h)

CTEST_SRC := $(sort $(wildcard spec/c/test_*.c))
CTESTS := $(CTEST_SRC:spec/c/%.c=$(BUILD)/spec/c/%)
FUZZ_SRC := $(sort $(wildcard spec/fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:spec/fuzz/fuzz_%.c=%)
BENCH_SRC := $(sort $(wildcard bench/bench_*.c))
BENCHES := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

MODULE := $(BUILD)/promscrape/core.so
LIBPS := $(BUILD)/libps.a

.PHONY: all lib ctests luajit asan deps demo check test test-c test-busted \
	test-replay test-asan test-valgrind test-luajit replay fuzz bench format \
	format-check check-rockspec install-rock clean nginx-demo

all: $(MODULE)

lib: $(LIBPS)

$(BUILD)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/obj/lua/%.o: src/lua/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(LUA_CFLAGS) -c $< -o $@

$(MODULE): $(CORE_OBJ) $(LUA_OBJ)
	@mkdir -p $(@D)
	$(CC) -shared $(SAN) -o $@ $^ $(DEP_LIBS)

$(LIBPS): $(CORE_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

# C tests link the core without Lua, so LeakSanitizer sees everything.
$(BUILD)/spec/c/%: spec/c/%.c $(wildcard spec/c/*.h) $(LIBPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $< -o $@ $(LIBPS) $(DEP_LIBS)

ctests: $(CTESTS)

$(BUILD)/bench/%: bench/%.c bench/benchlib.h $(LIBPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -O3 $< -o $@ $(LIBPS) $(DEP_LIBS)

# The same sources against LuaJIT (OpenResty): build/luajit/promscrape/core.so
luajit:
	$(MAKE) BUILD=build/luajit LUA_PC=luajit all

asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -g" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  all ctests replay

# ---- fuzzing --------------------------------------------------------------
# libFuzzer binaries (clang) and gcc+ASan replayers of the checked-in corpus.
FUZZ_SAN := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_CORE := $(CORE_SRC)
# fuzz_response gzips bodies itself (zlib1g-dev); libcurl pulls zlib anyway.
FUZZ_LIBS := $(DEP_LIBS) -lz

build/fuzz/fuzz_%: spec/fuzz/fuzz_%.c $(CORE_SRC) $(HDRS)
	@mkdir -p $(@D)
	$(CLANG) $(WARN) -g -O1 $(FUZZ_SAN) -D_POSIX_C_SOURCE=200809L -Isrc \
	  $(DEP_CFLAGS) $< $(FUZZ_CORE) -o $@ $(FUZZ_LIBS)

$(BUILD)/fuzz/replay_%: spec/fuzz/fuzz_%.c spec/fuzz/replay.c $(LIBPS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) spec/fuzz/replay.c $< -o $@ $(LIBPS) $(FUZZ_LIBS)

replay: $(FUZZ_NAMES:%=$(BUILD)/fuzz/replay_%)

FUZZ_SECONDS ?= 60
# fuzz_config.lua: the YAML config loader, which is Lua (hook coverage, no libFuzzer).
fuzz: $(FUZZ_NAMES:%=build/fuzz/fuzz_%) build/promscrape/core.so
	sh spec/fuzz/seed.sh
	@for t in $(FUZZ_NAMES); do sh spec/fuzz/run.sh $$t $(FUZZ_SECONDS) || exit 1; done
	$(LUA) spec/fuzz/fuzz_config.lua $(FUZZ_SECONDS)

# ---- tests ------------------------------------------------------------------
# Every stage writes TAP to $(BUILD)/tap/<stage>.tap; spec/tapsum.sh adds them
# up into the one "N passed, N failed" line CI reads.

deps:
	sh .ci/deps.sh

test: test-c test-replay test-busted

test-c: ctests
	sh spec/run.sh c $(BUILD) c

test-replay: replay
	sh spec/run.sh replay $(BUILD) replay

test-busted: all
	sh spec/run.sh busted $(BUILD) busted

test-asan: asan
	sh spec/run.sh c build/asan c-asan
	sh spec/run.sh replay build/asan replay-asan
	sh spec/run.sh busted-asan build/asan busted-asan

test-luajit: luajit
	sh spec/run.sh busted-luajit build/luajit busted-luajit

test-valgrind: all ctests
	sh spec/run.sh c-valgrind $(BUILD) c-valgrind
	sh spec/run.sh busted-valgrind $(BUILD) busted-valgrind

# Allocation-failure torture (spec/torture.sh, curl's runtests -t): each C
# test runs once per allocation it makes, failing that one only, under ASan
# and LeakSanitizer. make torture tries every allocation (an hour or two);
# make check tries a sample bounded by TORTURE_BUDGET seconds (default 120).
.PHONY: torture test-torture
torture: asan
	sh spec/run.sh torture-full build/asan torture-full

test-torture: asan
	sh spec/run.sh torture build/asan torture

# Runs every stage even when one fails, then sums them up; fails if any did.
check: deps
	rm -rf build/tap
	$(MAKE) all ctests replay luajit check-rockspec
	-$(MAKE) test-c
	-$(MAKE) test-replay
	-$(MAKE) test-busted
	-$(MAKE) test-luajit
	-$(MAKE) test-asan
	-$(MAKE) test-torture
	-$(MAKE) test-valgrind
	sh spec/tapsum.sh build/tap c replay busted busted-luajit c-asan replay-asan \
	  busted-asan torture c-valgrind busted-valgrind > build/check-summary.txt; \
	  rc=$$?; cat build/check-summary.txt; exit $$rc

demo: deps all
	sh examples/demo.sh

# The OpenResty/nginx example (docs/openresty.md): Debian's nginx + lua
# module on 127.0.0.1; NGINX_DEMO_SECONDS=n stops it after n seconds.
nginx-demo: luajit
	sh examples/nginx/run.sh

bench: all $(BENCHES)
	@for s in bench/run_*.sh; do sh $$s || exit 1; done

# The soak test (docs/soak.md), not part of check: SOAK_TARGETS targets at 1 s
# with churn and a reload every 10 s for SOAK_SECONDS; fails on RSS growth
# after SOAK_WARMUP or on any missed or doubled scrape.
SOAK_SECONDS ?= 1800
SOAK_TARGETS ?= 200
SOAK_WARMUP ?= 600
.PHONY: soak
soak: all
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_TARGETS=$(SOAK_TARGETS) \
	  SOAK_WARMUP=$(SOAK_WARMUP) sh bench/soak/run.sh

format:
	clang-format -i src/*.c src/*.h src/lua/*.c src/lua/*.h spec/c/*.c

format-check:
	clang-format --dry-run --Werror src/*.c src/*.h src/lua/*.c src/lua/*.h

# The rockspec lists sources by hand: make sure it lists the same ones.
check-rockspec:
	@lua5.4 spec/check_rockspec.lua promscrape-scm-1.rockspec $(CORE_SRC) $(LUA_SRC)

install-rock:
	luarocks --lua-version 5.4 make --deps-mode=none promscrape-scm-1.rockspec

clean:
	rm -rf build
