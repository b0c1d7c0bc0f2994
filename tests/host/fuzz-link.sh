#!/bin/sh
# A bounded libFuzzer run of the link's decoder (tests/fuzz/fuzz-link.c) from
# the seed corpus in tests/fuzz/corpus: any crash, leak, sanitizer report or
# timeout fails. FUZZ_SECONDS (default 20) bounds it.
set -u
build=${HARVESTER_BUILD:-build}
secs=${FUZZ_SECONDS:-20}
clang=${CLANG:-clang}

if ! command -v "$clang" >/dev/null 2>&1; then
	echo "skip: $clang not installed"
	exit 77
fi
rt=$("$clang" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)
if [ ! -f "$rt" ]; then
	echo "skip: clang's libFuzzer runtime is missing (libclang-rt-14-dev)"
	exit 77
fi
make -s BUILD="$build" CLANG="$clang" "$build/fuzz/fuzz-link" || exit 1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# New inputs go to a scratch directory; the committed corpus is only read.
"$build/fuzz/fuzz-link" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
	-print_final_stats=1 "$work" tests/fuzz/corpus >"$work.log" 2>&1
rc=$?
grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$work.log"
if [ $rc -ne 0 ]; then
	tail -n 60 "$work.log"
	rm -f "$work.log"
	echo "fuzz-link: the decoder failed (exit $rc)"
	exit 1
fi
rm -f "$work.log"
echo "fuzz-link: ${secs}s, no crash, leak or sanitizer report"
