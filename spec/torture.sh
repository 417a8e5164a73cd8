#!/bin/sh
# spec/torture.sh [--bounded] BUILD [PROGRAM...]: allocation-failure torture
# (curl's runtests -t), printing TAP with one line per C test program.
#
# For each program (default: BUILD/spec/c/test_*, an ASan build), a counting
# run (PS_TORTURE_COUNT=1) tells how many allocations go through the core's
# hook: N failure points. Then the program runs again once per point k with
# PS_TORTURE_FAIL_AT=k, which fails the k-th allocation and only that one
# (see ps_alloc_fail_at() in src/ps_core.h; the forked loopback fixture never
# fails, and allocations under a test's own ps_alloc_fail_after() loop are not
# counted). A run passes when it exits 0 or 1 (failed "not ok" assertions are
# expected: the library returned an error), with no signal, no sanitizer
# report (LeakSanitizer is on, so a leak on an error path fails), and within
# its timeout. A run whose program allocated fewer than k times ("not fired")
# still counts as tried: threads and timing make N vary a little.
#
# Full mode (make torture) tries every k. --bounded (the torture stage of make
# check) tries an evenly spaced sample of each program's points, always
# including k = 1 and k = N: each program gets an equal share of
# TORTURE_BUDGET seconds (default 120), turned into a number of points from
# the counting run's wall and CPU times, and no new run starts once
# 1.25 x the budget has passed (programs advance through their samples at the
# same pace, so a loaded machine shortens them all alike). TORTURE_POINTS=n
# asks for a fixed sample of n points per program, with no deadline.
#
# Runs go in parallel: TORTURE_JOBS (default 4 x CPUs: the slow programs
# mostly wait on sockets and timers; timeouts allow for the crowding).
# Outputs of failing runs are kept in BUILD/torture/<program>/<k>.{out,err};
# every other output is removed.
set -u

SAN_ENV="ASAN_OPTIONS=exitcode=86:detect_leaks=1:abort_on_error=0 \
UBSAN_OPTIONS=halt_on_error=1:exitcode=87:print_stacktrace=1"

# ---- one run (called back through xargs) -----------------------------------
# --one PROG K TIMEOUT DIR DEADLINE: runs PROG failing allocation K (0: the
# counting run) and writes DIR/K.res: "ok FIRED COUNTED MS CPUMS",
# "bad FIRED COUNTED MS CPUMS REASON" or "skip" (past DEADLINE, 0: none):
# MS is wall time, CPUMS the CPU time of the run and its children (which,
# unlike wall time, does not depend on what else the machine is doing).
if [ "${1:-}" = --one ]; then
    prog=$2 k=$3 t=$4 dir=$5 deadline=$6
    if [ "$deadline" -gt 0 ] && [ "$(date +%s)" -ge "$deadline" ]; then
        echo skip > "$dir/$k.res"
        exit 0
    fi
    start=$(date +%s%3N)
    # shellcheck disable=SC2086
    env $SAN_ENV PS_TORTURE_COUNT=1 PS_TORTURE_FAIL_AT="$k" \
        timeout -k 10 "$t" "$prog" > "$dir/$k.out" 2> "$dir/$k.err"
    rc=$?
    ms=$(($(date +%s%3N) - start))
    # times: the shell's own line, then its children's "0m0.20s 0m0.18s".
    # Not in a pipe: a subshell would report its own (empty) children.
    times > "$dir/$k.times"
    cpums=$(awk 'NR == 2 {
        for (i = 1; i <= 2; i++) {
            split($i, a, /[ms]/)
            t += a[1] * 60 + a[2]
        }
        printf "%d", t * 1000
    }' "$dir/$k.times")
    rm -f "$dir/$k.times"
    counted=$(sed -n 's/^# ps_torture: counted=\([0-9]*\).*/\1/p' "$dir/$k.err")
    fired=0
    [ -n "$counted" ] && [ "$k" -gt 0 ] && [ "$counted" -ge "$k" ] && fired=1
    why=
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        why="hang: killed after ${t}s"
    elif grep -qE 'Sanitizer|runtime error:' "$dir/$k.err"; then
        why="sanitizer report, exit $rc"
    elif [ $rc -gt 128 ]; then
        why="killed by signal $((rc - 128))"
    elif [ $rc -gt 1 ]; then
        why="exit status $rc"
    elif [ -z "$counted" ]; then
        why="no ps_torture report at exit"
    fi
    if [ -n "$why" ]; then
        echo "bad $fired ${counted:-0} $ms $cpums $why" > "$dir/$k.res"
    else
        # The counting run's TAP is kept: the summary reports its not-oks.
        [ "$k" -eq 0 ] || rm -f "$dir/$k.out" "$dir/$k.err"
        echo "ok $fired ${counted:-0} $ms $cpums" > "$dir/$k.res"
    fi
    exit 0
fi

# ---- the driver --------------------------------------------------------------
bounded=0
if [ "${1:-}" = --bounded ]; then
    bounded=1
    shift
fi
build=${1:?usage: spec/torture.sh [--bounded] BUILD [PROGRAM...]}
shift
[ $# -gt 0 ] || set -- "$build"/spec/c/test_*
ncpu=$(nproc 2>/dev/null || echo 2)
jobs=${TORTURE_JOBS:-$((4 * ncpu))}
budget=${TORTURE_BUDGET:-120}
self=$0
work=$build/torture
rm -rf "$work"
mkdir -p "$work"
t0=$(date +%s)

progs=
for p in "$@"; do
    [ -x "$p" ] || continue
    progs="$progs $p"
    mkdir -p "$work/$(basename "$p")"
done
nprog=$(echo $progs | wc -w)
if [ "$nprog" -eq 0 ]; then
    echo "not ok 1 - torture: no test programs in $build/spec/c"
    echo "1..1"
    exit 1
fi

# Counting runs, in parallel: generous timeout, no deadline.
for p in $progs; do
    echo "$p 0 600 $work/$(basename "$p") 0"
done | xargs -P "$jobs" -L 1 sh "$self" --one

# Plans the points of each program, slowest first.
plan=$work/plan
: > "$plan"
for p in $progs; do
    d=$work/$(basename "$p")
    read -r st _ n ms cpums _ < "$d/0.res"
    [ "$st" = ok ] || continue
    [ "$ms" -ge 1 ] || ms=1
    # A run under torture may take longer (retries, timeouts): 10 x the
    # counting run, at least a minute.
    t=$((ms / 100))
    [ "$t" -ge 60 ] || t=60
    if [ "$bounded" -eq 0 ]; then
        pts=$n
    elif [ -n "${TORTURE_POINTS:-}" ]; then
        pts=$TORTURE_POINTS
    else
        # Time per point with the pool full: the wall time shared by the
        # parallel runs, or the CPU time shared by the CPUs if that is more.
        per=$((ms / jobs))
        [ "$((cpums / ncpu))" -le "$per" ] || per=$((cpums / ncpu))
        [ "$per" -ge 1 ] || per=1
        pts=$((budget * 1000 / nprog / per))
        [ "$pts" -ge 4 ] || pts=4
    fi
    [ "$pts" -le "$n" ] || pts=$n
    echo "$pts" > "$d/points"
    echo "$ms $p $n $pts $t $d"
done | sort -rn > "$plan.progs"

deadline=0
[ "$bounded" -eq 1 ] && [ -z "${TORTURE_POINTS:-}" ] &&
    deadline=$((t0 + budget * 5 / 4))
while read -r _ p n pts t d; do
    # pts points evenly spaced over 1..n, both ends included, each led by
    # its place in the program's sample (0..1).
    awk -v n="$n" -v m="$pts" 'BEGIN {
        if (m == 1) { print 0, 1; exit }
        last = 0
        for (i = 0; i < m; i++) {
            k = 1 + int(i * (n - 1) / (m - 1))
            if (k != last) printf "%.6f %d\n", i / (m - 1), k
            last = k
        }
    }' | while read -r at k; do
        echo "$at $p $k $t $d $deadline"
    done
done < "$plan.progs" > "$plan.all"
# Interleaved by place: every program advances at the same pace, so a
# deadline cuts all samples short alike (the slow programs lead each round).
sort -s -k1,1n "$plan.all" | cut -d' ' -f2- > "$plan"
xargs -P "$jobs" -L 1 sh "$self" --one < "$plan"

# ---- TAP: one line per program ----------------------------------------------
i=0 status=0 total=0 totcpu=0
for p in $progs; do
    name=$(basename "$p")
    d=$work/$name
    i=$((i + 1))
    read -r st _ n _ _ why < "$d/0.res"
    if [ "$st" != ok ]; then
        status=1
        echo "not ok $i - torture $name: the counting run failed ($why)"
        sed -n '1,20s/^/# /p' "$d/0.err"
        continue
    fi
    notok=$(grep -c '^not ok' "$d/0.out")
    [ "$notok" -eq 0 ] ||
        echo "# $name: $notok not-ok lines even without torture (not counted)"
    tried=0 fired=0 skipped=0 bad= nbad=0 ms=0 cpu=0
    for k in $(ls "$d" | sed -n 's/^\([1-9][0-9]*\)\.res$/\1/p' | sort -n); do
        read -r st f _ s c why < "$d/$k.res"
        if [ "$st" = skip ]; then
            skipped=$((skipped + 1))
            continue
        fi
        tried=$((tried + 1)) fired=$((fired + f))
        ms=$((ms + s)) cpu=$((cpu + c))
        [ "$st" = bad ] || continue
        bad="$bad $k" nbad=$((nbad + 1))
        # Many k hit the same bug: describe each crash site once, named by
        # the first frame in our own sources past the allocator (or by the
        # UBSan location).
        site=$(awk '/runtime error:/ { print $1; exit }
            / #[0-9]+ .* in .*(src|spec)\// && !/ps_core\.c/ {
                print $(NF - 1), $NF; exit }' "$d/$k.err")
        site="${why%%,*} ${site:-?}"
        grep -qxF "$site" "$d/sites" 2>/dev/null && continue
        echo "$site" >> "$d/sites"
        echo "# $name k=$k: $why (output kept in $d/$k.err)"
        awk '/ERROR:|runtime error:/ && !seen { seen = 1; print; next }
             seen && /^ *#[0-9]+ / && n < 6 { n++; print }' "$d/$k.err" |
            sed 's/^/#   /'
    done
    total=$((total + tried)) totcpu=$((totcpu + cpu))
    what="$tried of $n failure points ($fired fired"
    [ "$skipped" -eq 0 ] || what="$what, $skipped skipped for time"
    what="$what; runs took $((ms / 1000)) s, $((cpu / 1000)) CPU-s)"
    if [ -n "$bad" ]; then
        status=1
        first=$(echo $bad | cut -d' ' -f1-20)
        [ "$nbad" -le 20 ] || first="$first ..."
        echo "not ok $i - torture $name: $what; $nbad failed (k = $first)"
    else
        echo "ok $i - torture $name: $what"
    fi
done
echo "# torture: $total failure points over $nprog programs in" \
    "$(($(date +%s) - t0)) s wall, $((totcpu / 1000)) CPU-s" \
    "($jobs parallel runs)"
echo "1..$i"
exit $status
