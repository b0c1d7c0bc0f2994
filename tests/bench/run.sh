#!/bin/sh
# make bench: build the harvest load twice (plain, and against the BOINC API
# for the real BOINC client), then run the benchmark. Not part of make check:
# it takes about 29 minutes on 2 cores.
# usage: run.sh BUILD
set -eu
build=${1:-build}
mkdir -p "$build/bench"
${CC:-cc} -O2 -Wall -Wextra -Werror -o "$build/bench/burn" tests/bench/burn.c
${CXX:-g++} -x c++ -O2 -Wall -Wextra -Werror -DWITH_BOINC -o "$build/bench/burn-boinc" tests/bench/burn.c \
	-lboinc_api -lboinc -lpthread
HARVESTER_BUILD="$build" exec python3 tests/bench/bench.py
