#!/bin/sh
# Run the test programs of a suite and print one closing line:
#   "tests: N passed, N failed, N skipped".
# A test is an executable: exit 0 passes, 77 skips (it must say why), any
# other status fails. Output of each test goes to $LOG_DIR/<name>.log and is
# shown when it fails or skips.
# usage: run.sh unit|host|vm|all SAN_BUILD [PLAIN_BUILD]
set -u
suite=$1
san=$2
plain=${3:-$2}
LOG_DIR=$san/test-logs
mkdir -p "$LOG_DIR"
export HARVESTER_BUILD="$san" HARVESTER_PLAIN_BUILD="$plain"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"

pass=0 fail=0 skip=0 failed=""
run() {
	name=$1; shift
	log=$LOG_DIR/$name.log
	mkdir -p "$(dirname "$log")"
	start=$(date +%s)
	"$@" >"$log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	case $rc in
	0) pass=$((pass + 1)); echo "PASS $name (${secs}s)" ;;
	77) skip=$((skip + 1)); echo "SKIP $name: $(tail -n 1 "$log")" ;;
	*) fail=$((fail + 1)); failed="$failed $name"; echo "FAIL $name (exit $rc, ${secs}s)"; sed 's/^/    /' "$log" | tail -n 40 ;;
	esac
}

if [ "$suite" = unit ] || [ "$suite" = all ]; then
	for t in "$san"/tests/test-*; do
		[ -x "$t" ] && run "unit/$(basename "$t")" "$t"
	done
fi
if [ "$suite" = host ] || [ "$suite" = all ]; then
	for t in "$san"/tests/host-*; do
		[ -x "$t" ] && run "host/$(basename "$t")" "$t"
	done
	for t in tests/host/*.sh; do
		[ -f "$t" ] && run "host/$(basename "$t" .sh)" sh "$t"
	done
	for t in tests/host/test_*.py; do
		[ -f "$t" ] && run "host/$(basename "$t" .py)" python3 "$t"
	done
fi
if [ "$suite" = vm ] || [ "$suite" = all ]; then
	if [ -f tests/vm/run.sh ]; then
		run vm/suite sh tests/vm/run.sh "$plain"
		sed -n '/^== VM figures/,/^== end/p' "$LOG_DIR/vm/suite.log" 2>/dev/null
	fi
fi

echo
[ -n "$failed" ] && echo "failed:$failed"
echo "tests: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ] && [ $((pass + fail)) -gt 0 ]
