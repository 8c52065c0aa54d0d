#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz with clang under AddressSanitizer + UndefinedBehaviorSanitizer (in
# build-fuzz/, only what they link) and runs each for a bounded time, starting from its committed corpus.
#   tools/fuzz.sh                      every target, 30 s each
#   tools/fuzz.sh --seconds=600 jsonl  one target (or several), longer
#   tools/fuzz.sh --list               the targets
# Options: --seconds=N (per target), --jobs=N (targets run at once; default: cores), --ci (start from the committed
# corpus alone, with a fixed -seed, as CI does; otherwise what earlier runs found, kept in build-fuzz/fuzz-work/,
# is fuzzed further), --build-only.
# A finding (crash, sanitizer report, leak, an input slower than --timeout=S (default 30) or one that needs more
# than 2 GB) fails the run; its reproducer is printed, with the command that replays it. To keep a fixed finding as
# a regression input, copy the reproducer into tests/fuzz/corpus/<target>/ (the test suite replays that folder).
# Environment: FUZZ_BUILD_DIR (default build-fuzz), CXX_FUZZ (default clang++-14), JOBS.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${FUZZ_BUILD_DIR:-$repo/build-fuzz}"
seconds=30
timeout=30
jobs="${JOBS:-$(nproc)}"
ci=0
list=0
build_only=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --seconds=*) seconds="${arg#--seconds=}" ;;
    --timeout=*) timeout="${arg#--timeout=}" ;;
    --jobs=*) jobs="${arg#--jobs=}" ;;
    --ci) ci=1 ;;
    --list) list=1 ;;
    --build-only) build_only=1 ;;
    -*) echo "fuzz: unknown option '$arg'" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done

cxx="${CXX_FUZZ:-$(command -v clang++-14 || command -v clang++ || true)}"
if [ -z "$cxx" ]; then
  echo "fuzz: no clang++ (Debian: clang-14 and libclang-rt-14-dev, in tools/packages/test.txt)" >&2
  exit 2
fi
# shellcheck source=tools/sanitizer_env.sh
source "$repo/tools/sanitizer_env.sh"

start=$(date +%s)
# OpenMP: GCC's runtime (libgomp), which LibTorch already loads; clang would pick LLVM's libomp, and two OpenMP
# runtimes in one process do not mix.
gomp="$(g++ -print-file-name=libgomp.so)"
cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DRLHF_FUZZ=ON -DRLHF_BUILD_TESTS=ON -DRLHF_SANITIZE=address,undefined \
  -DOpenMP_CXX_FLAGS=-fopenmp=libgomp -DOpenMP_CXX_LIB_NAMES=gomp -DOpenMP_gomp_LIBRARY="$gomp" >/dev/null
all_targets=()
for f in "$build_dir"/tests/fuzz/targets/*; do all_targets+=("$(basename "$f")"); done
if [ "$list" = 1 ]; then
  printf '%s\n' "${all_targets[@]}"
  exit 0
fi
[ "${#targets[@]}" -gt 0 ] || targets=("${all_targets[@]}")
build_targets=()
for t in "${targets[@]}"; do
  [ -f "$build_dir/tests/fuzz/targets/$t" ] || { echo "fuzz: no target '$t' (--list)" >&2; exit 2; }
  build_targets+=("${t}_fuzzer")
done
nice -n 5 ninja -C "$build_dir" -j "$jobs" "${build_targets[@]}"
echo "fuzz: build took $(( $(date +%s) - start )) s"
[ "$build_only" = 0 ] || exit 0

# Runs one target; its log goes to $build_dir/fuzz-logs/<target>.log.
run_target() {
  local name="$1"
  local binary corpus seeds
  binary="$(sed -n 's/^binary=//p' "$build_dir/tests/fuzz/targets/$name")"
  corpus="$(sed -n 's/^corpus=//p' "$build_dir/tests/fuzz/targets/$name")"
  seeds="$(sed -n 's/^seeds=//p' "$build_dir/tests/fuzz/targets/$name")"
  local work="$build_dir/fuzz-work/$name" findings="$build_dir/fuzz-findings/$name"
  [ "$ci" = 0 ] || rm -rf "$work"
  rm -rf "$findings"
  mkdir -p "$work" "$findings"
  local dirs=("$work")
  [ -d "$corpus" ] && dirs+=("$corpus")
  [ -d "$seeds" ] && dirs+=("$seeds")
  local args=(-max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$findings/")
  [ "$ci" = 0 ] || args+=(-seed=1)
  "$binary" "${args[@]}" "${dirs[@]}" >"$build_dir/fuzz-logs/$name.log" 2>&1
}

# From here on every failure is counted and reported, not fatal.
set +e
mkdir -p "$build_dir/fuzz-logs"
passed=0
failed=()
declare -A pids=()
report() {
  local name="$1" status="$2"
  local log="$build_dir/fuzz-logs/$name.log"
  local runs
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  if [ "$status" = 0 ]; then
    passed=$((passed + 1))
    echo "fuzz: ok   $name (${runs:-?} inputs in ${seconds} s)"
    return
  fi
  failed+=("$name")
  local reproducer
  reproducer="$(ls -t "$build_dir/fuzz-findings/$name"/* 2>/dev/null | head -1 || true)"
  echo "fuzz: FAIL $name (exit $status); log: $log"
  { grep -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|fuzz finding:|SUMMARY:|^    #[0-9] " "$log" || tail -20 "$log"; } | head -40 |
    cut -c1-240 | sed 's/^/  | /' || true
  if [ -n "$reproducer" ]; then
    echo "fuzz: reproducer: $reproducer"
    echo "fuzz: replay it with: $build_dir/tests/fuzz/${name}_fuzzer $reproducer"
  fi
}
for name in "${targets[@]}"; do
  while [ "${#pids[@]}" -ge "$jobs" ]; do
    for n in "${!pids[@]}"; do
      if ! kill -0 "${pids[$n]}" 2>/dev/null; then
        status=0
        wait "${pids[$n]}" || status=$?
        unset "pids[$n]"
        report "$n" "$status"
      fi
    done
    sleep 0.5
  done
  run_target "$name" &
  pids[$name]=$!
done
for n in "${!pids[@]}"; do
  status=0
  wait "${pids[$n]}" || status=$?
  report "$n" "$status"
done
echo "fuzz: took $(( $(date +%s) - start )) s in all"
echo "fuzz: ${passed} passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
