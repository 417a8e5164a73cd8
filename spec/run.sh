#!/bin/sh
# spec/run.sh KIND BUILD NAME: runs one test stage and writes its TAP to
# build/tap/NAME.tap (the output also goes to the terminal). KIND:
#   c                C tests in BUILD/spec/c (each prints TAP; leak checks on)
#   c-valgrind       the same under valgrind
#   replay           fuzz corpus replayers in BUILD/fuzz
#   busted           busted specs with lua5.4 against BUILD/?.so
#   busted-luajit    the same specs under LuaJIT against build/luajit
#   busted-asan      the same with libasan preloaded (module built with ASan)
#   busted-valgrind  the same under valgrind, with a GC-stressing prelude
#   torture          allocation-failure torture of the C tests in BUILD/spec/c
#                    (an ASan build): a time-bounded sample, one line per test
#   torture-full     the same, failing every allocation in turn (make torture)
# A stage that dies before printing its plan counts as failed in tapsum.sh.
set -u
kind=$1 build=$2 name=$3
mkdir -p build/tap
out=build/tap/$name.tap
: > "$out"

VG="valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect --suppressions=spec/valgrind.supp"
BUSTED="/usr/bin/busted -o TAP --cpath=$build/?.so"
# The plain stage runs every spec. The LuaJIT, ASan and valgrind stages skip
# the ones tagged #slow: they start real servers (Prometheus, nginx,
# VictoriaMetrics, a 30 s store outage, tmux) and mostly wait on them, while
# the C paths they reach are exercised by the other specs too. Keeps make
# check well inside CI's time.
QUICK="--exclude-tags=slow"
# Lua's own allocations are not ours to check: LSan runs in the C tests.
ASAN_ENV="ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1"

# Each C test program prints its own TAP; renumber them into one stream.
run_tap_programs() {
    wrap=$1; shift
    n=0 status=0
    for t in "$@"; do
        [ -x "$t" ] || continue
        if ! $wrap "$t" > "$out.one" 2>"$out.err"; then
            status=1
            cat "$out.err" >&2
            echo "not ok - $(basename "$t") exited with failure" >> "$out.one"
        fi
        while IFS= read -r line; do
            case "$line" in
            "ok "*|"not ok "*)
                n=$((n + 1))
                rest=$(printf '%s' "$line" | sed -E 's/^(not )?ok [0-9]* ?-? ?//')
                case "$line" in
                "not ok"*) echo "not ok $n - $(basename "$t"): $rest" ;;
                *) echo "ok $n - $(basename "$t"): $rest" ;;
                esac ;;
            *) echo "# $line" ;;
            esac
        done < "$out.one"
    done
    echo "1..$n"
    return $status
}

stage() {
case $kind in
c)
    run_tap_programs "env ASAN_OPTIONS=detect_leaks=1" "$build"/spec/c/test_* ;;
c-valgrind)
    run_tap_programs "$VG" "$build"/spec/c/test_* ;;
replay)
    set --
    for r in "$build"/fuzz/replay_*; do
        [ -x "$r" ] || continue
        t=${r##*/replay_}
        set -- "$@" "$r"
    done
    n=0 status=0
    for r in "$@"; do
        t=${r##*/replay_}
        n=$((n + 1))
        if "$r" "spec/fuzz/corpus/$t" > "$out.one" 2>&1; then
            echo "ok $n - replay $t corpus ($(grep -c . "$out.one") lines of output)"
        else
            status=1
            cat "$out.one" >&2
            echo "not ok $n - replay $t corpus"
        fi
    done
    echo "1..$n"
    [ $status -eq 0 ] ;;
busted)
    lua5.4 $BUSTED ;;
busted-luajit)
    # The OpenResty flavour: same specs, LuaJIT, the luajit build.
    luajit $BUSTED $QUICK ;;
busted-asan)
    env $ASAN_ENV LD_PRELOAD="$(gcc -print-file-name=libasan.so)" lua5.4 $BUSTED $QUICK ;;
busted-valgrind)
    # Collect often, so use-after-free of collected userdata shows up.
    $VG lua5.4 -e 'collectgarbage("setpause", 100); collectgarbage("setstepmul", 1000)' \
        $BUSTED $QUICK ;;
torture)
    sh spec/torture.sh --bounded "$build" ;;
torture-full)
    sh spec/torture.sh "$build" ;;
*)
    echo "spec/run.sh: unknown kind $kind" >&2
    exit 2 ;;
esac
}

{ stage; echo $? > "$out.rc"; } 2>&1 | tee "$out"
exit "$(cat "$out.rc")"
