#!/usr/bin/env bash
# The main job: sets up (tools/setup.sh), builds the suite in build/ and runs `rlhf run` on loopback.
#   tools/run.sh [rlhf run flags, e.g. --run_dir=runs/mine]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${BUILD_DIR:-$repo/build}"
"$repo/tools/setup.sh"
cmake -S "$repo" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" >/dev/null
ninja -C "$build_dir" -j "${JOBS:-$(nproc)}" rlhf rlhf-policy-generation rlhf-reference-logprob rlhf-reward-scoring \
  rlhf-ppo-trainer rlhf-orchestrator rlhf-labeling
cd "$repo"
exec "$build_dir/tools/cli/rlhf" run "$@"
