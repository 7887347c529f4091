#!/usr/bin/env bash
# Runs the Swift tests (`swift test --skip-build "$@"`) with a deadline, so that a test that hangs
# fails the run with a diagnosis instead of holding CI until its own limit: past
# SWIFT_TEST_SECONDS (default 1500) it prints the tests that started and never ended, every
# thread's stack of the test process (when gdb is present), and exits 124.
#
# Output is line-buffered (stdbuf), so what a killed run printed last is not lost in a buffer.
set -uo pipefail
swift=${SWIFT:-swift}
deadline=${SWIFT_TEST_SECONDS:-1500}
log=$(mktemp "${TMPDIR:-/tmp}/budget-ledger-swift-test.XXXXXX")
trap 'rm -f "$log"' EXIT

# Its own process group, so that the test process and everything it started can be stopped.
setsid stdbuf -oL -eL "$swift" test --skip-build "$@" > "$log" 2>&1 &
runner=$!
tail -n +1 -f --pid="$runner" "$log" &
follower=$!

# The test process's stacks, when gdb is present.
print_stacks() {
    local tests
    tests=$(pgrep -s "$runner" -f 'PackageTests.xctest' | head -1)
    if [ -n "$tests" ] && command -v gdb > /dev/null 2>&1; then
        echo "swift-test.sh: the stacks of the test process ($tests):"
        timeout 120 gdb -p "$tests" -batch -ex 'thread apply all bt' 2>&1 | grep -E '^(Thread|#)' | head -800
    fi
}

started=$(date +%s)
ended=""
while kill -0 "$runner" 2>/dev/null; do
    # The run's last line is out but the process has not exited: a hang in exit (an exit hook),
    # not in a test. Said loudly, with the stacks; the run's own verdict stands.
    if [ -z "$ended" ] && grep -qE '^(✔|✘) Test run with .* (passed|failed) after ' "$log"; then ended=$(date +%s); fi
    if [ -n "$ended" ] && [ $(( $(date +%s) - ended )) -ge 120 ]; then
        echo "swift-test.sh: WARNING: the test process had not exited 120 s after its run ended"
        print_stacks
        kill -KILL -- "-$runner" 2>/dev/null
        wait "$runner" 2>/dev/null
        kill "$follower" 2>/dev/null
        grep -qE '^✔ Test run with .* passed after ' "$log" && exit 0
        exit 1
    fi
    if [ $(( $(date +%s) - started )) -ge "$deadline" ]; then
        sleep 1
        echo
        echo "swift-test.sh: the tests ran past ${deadline} s. Tests that started and never ended:"
        # "◇ Test NAME started." against "✔/✘ Test NAME [with N test cases] passed|failed after …"
        # and "➜ Test NAME skipped".
        awk '
            /^◇ Test (case .*|run) started\.$/ { next }
            /^◇ Test .* started\.$/ { name = $0; sub(/^◇ Test /, "", name); sub(/ started\.$/, "", name); open[name] = 1; next }
            /^(✔|✘|➜) Test .* ((passed|failed) after |skipped)/ {
                name = $0; sub(/^(✔|✘|➜) Test /, "", name)
                sub(/ (with [0-9]+ test cases? )?((passed|failed) after .*|skipped.*)$/, "", name)
                delete open[name]
            }
            END { for (name in open) print "  " name }
        ' "$log"
        print_stacks
        kill -KILL -- "-$runner" 2>/dev/null
        wait "$runner" 2>/dev/null
        kill "$follower" 2>/dev/null
        exit 124
    fi
    sleep 2
done
wait "$runner"
status=$?
wait "$follower" 2>/dev/null
exit "$status"
