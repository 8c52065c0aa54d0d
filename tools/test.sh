#!/usr/bin/env bash
# Sets up (tools/setup.sh), builds (CMake + Ninja, in build/) and runs the whole test suite with ctest.
#   tools/test.sh [extra ctest args, e.g. -R Server]
# Environment: BUILD_DIR (default build), CMAKE_BUILD_TYPE (default RelWithDebInfo), JOBS (default: cores).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${BUILD_DIR:-$repo/build}"
jobs="${JOBS:-$(nproc)}"

"$repo/tools/setup.sh"
start=$(date +%s)
cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" >/dev/null
ninja -C "$build_dir" -j "$jobs"
echo "test: build took $(( $(date +%s) - start )) s"
cd "$build_dir"
ctest --output-on-failure -j "$jobs" --timeout 600 "$@"
