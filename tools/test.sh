#!/usr/bin/env bash
# Sets up (tools/setup.sh), builds (CMake + Ninja, in build/), runs the fuzz stage (tools/fuzz.sh: every libFuzzer
# target for a bounded time under ASan + UBSan, in build-fuzz/) and the whole test suite with ctest.
#   tools/test.sh [extra ctest args, e.g. -R Server]
#   tools/test.sh --sanitize [extra ctest args]   the same suite built with -fsanitize=address,undefined (g++) in
#                                                  build-asan/; no fuzz stage
#   tools/test.sh --no-fuzz [extra ctest args]    skip the fuzz stage
# Environment: BUILD_DIR (default build, or build-asan with --sanitize), CMAKE_BUILD_TYPE (default RelWithDebInfo),
# JOBS (default: cores), FUZZ_SECONDS (default 30: seconds per fuzz target).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="${JOBS:-$(nproc)}"
sanitize=0
fuzz=1
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) sanitize=1; fuzz=0; shift ;;
    --no-fuzz) fuzz=0; shift ;;
    *) break ;;
  esac
done

cmake_args=()
if [ "$sanitize" = 1 ]; then
  build_dir="${BUILD_DIR:-$repo/build-asan}"
  cmake_args+=(-DRLHF_SANITIZE=address,undefined)
  # shellcheck source=tools/sanitizer_env.sh
  source "$repo/tools/sanitizer_env.sh"
else
  build_dir="${BUILD_DIR:-$repo/build}"
fi

"$repo/tools/setup.sh"
start=$(date +%s)
cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" \
  "${cmake_args[@]}" >/dev/null
ninja -C "$build_dir" -j "$jobs"
echo "test: build took $(( $(date +%s) - start )) s"
# The fuzz stage runs before ctest (so that ctest's summary closes the output); a finding fails the run after it.
fuzz_status=0
if [ "$fuzz" = 1 ]; then
  "$repo/tools/fuzz.sh" --seconds="${FUZZ_SECONDS:-30}" --ci || fuzz_status=$?
fi
cd "$build_dir"
ctest --output-on-failure -j "$jobs" --timeout 600 "$@"
if [ "$fuzz_status" != 0 ]; then
  echo "test: the fuzz stage failed (exit $fuzz_status); its reproducers are listed above" >&2
  exit 1
fi
