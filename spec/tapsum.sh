#!/bin/sh
# spec/tapsum.sh DIR STAGE...: adds up the TAP of every stage into the line
# CI reads: "N passed, N failed, N skipped". A stage whose file is missing or
# has no plan line (it crashed or never ran) counts as one failure, so a
# broken build can never look green. Exit status 1 if anything failed.
dir=$1; shift
pass=0 fail=0 skip=0
for stage in "$@"; do
    f=$dir/$stage.tap
    if [ ! -s "$f" ] || ! grep -qE '^1\.\.[0-9]+' "$f"; then
        echo "stage $stage: no complete TAP output (did not run or crashed)"
        fail=$((fail + 1))
        continue
    fi
    p=$(grep -E '^ok ' "$f" | grep -vcE '# (SKIP|skip|TODO)')
    s=$(grep -E '^ok ' "$f" | grep -cE '# (SKIP|skip|TODO)')
    x=$(grep -cE '^not ok ' "$f")
    rc=$(cat "$f.rc" 2>/dev/null || echo 1)
    if [ "$rc" != 0 ] && [ "$x" -eq 0 ]; then
        echo "stage $stage: every case passed but the stage exited $rc"
        x=1
    fi
    echo "stage $stage: $p passed, $x failed, $s skipped"
    pass=$((pass + p)) fail=$((fail + x)) skip=$((skip + s))
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
