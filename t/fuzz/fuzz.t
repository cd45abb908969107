#!/bin/sh
# Replay each libFuzzer harness's committed corpus (t/fuzz/corpus/NAME:
# the seeds and every regression input), then fuzz it for FUZZ_CHECK_TIME
# seconds (default 3), so a parser change that crashes, leaks or breaks a
# property shows in `make test`.  `make fuzz` is the long run.
# The harnesses are built by `make fuzzers` (part of `make test`).
cd "$(dirname "$0")/../.." || exit 1
time=${FUZZ_CHECK_TIME:-3}
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
LSAN_OPTIONS=suppressions=$PWD/t/fuzz/lsan.supp
export LSAN_OPTIONS
names=$(cd t/fuzz && ls *.c | sed 's/\.c$//')
echo "1..$(( $(echo "$names" | wc -w) * 2 ))"
n=0
for f in $names; do
	bin=build/fuzz/$f
	corpus=t/fuzz/corpus/$f
	n=$((n + 1))
	if [ -x "$bin" ] && [ -d "$corpus" ] &&
	    "$bin" -rss_limit_mb=2048 -timeout=20 "$corpus"/* >"$work/$f.replay" 2>&1; then
		echo "ok $n - $f: $(ls "$corpus" | wc -l) corpus inputs replay clean"
	else
		echo "not ok $n - $f: corpus replay (harness built? corpus present?)"
		sed 's/^/# /' "$work/$f.replay" 2>/dev/null | tail -40
	fi
	n=$((n + 1))
	mkdir -p "$work/$f"
	if [ -x "$bin" ] && "$bin" -max_total_time="$time" -print_final_stats=1 -rss_limit_mb=2048 -timeout=20 \
	    -artifact_prefix="$work/$f-" "$work/$f" "$corpus" >"$work/$f.log" 2>&1; then
		echo "ok $n - $f: fuzzed $time s, $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$f.log" | grep -o '[0-9]*$' || echo '?') runs"
	else
		echo "not ok $n - $f: fuzzing $time s found something"
		sed 's/^/# /' "$work/$f.log" | grep -v -E '^# #[0-9]+ +(NEW|REDUCE|pulse)' | tail -40
		for a in "$work/$f"-crash-* "$work/$f"-leak-* "$work/$f"-timeout-* "$work/$f"-oom-* "$work/$f"-slow-unit-*; do
			[ -f "$a" ] && echo "# input (base64): $(base64 -w0 "$a")"
		done
	fi
done
