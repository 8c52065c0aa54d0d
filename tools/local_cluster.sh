#!/usr/bin/env bash
# The suite's docker-compose topology as plain processes on loopback, for machines without a container engine: the six
# services from the build folder and a real Prometheus (Debian's `prometheus`) scraping them with the suite's rules.
#   tools/local_cluster.sh up       start everything, wait until each service reports SERVING, print the addresses
#                                   and write <state>/run.pbtxt, a run config of the built-in task on this cluster
#   tools/local_cluster.sh status   show each process, its health and Prometheus's view of its scrape target
#   tools/local_cluster.sh down     stop exactly the processes `up` started (by their pid files), then check none is left
# Build first (tools/run.sh or ninja -C build) and install Prometheus (tools/setup.sh does). Environment:
#   RLHF_CLUSTER_DIR               state folder: pids, logs, models, runs, checkpoints, Prometheus data
#                                  (default <repo>/runs/cluster)
#   RLHF_BUILD_DIR                 build folder with the binaries (default <repo>/build)
#   RLHF_CLUSTER_GRPC_PORT         first gRPC port; the six services take it and the next five (default 50050)
#   RLHF_CLUSTER_METRICS_PORT      first /metrics port, likewise (default 9460)
#   RLHF_CLUSTER_PROMETHEUS_PORT   Prometheus's port (default 9090)
#   RLHF_CLUSTER_SCRAPE_INTERVAL   Prometheus's scrape and rule-evaluation interval (default 5s)
#   RLHF_CLUSTER_THREADS           LibTorch threads of each model service (default 1: three share the machine)
#   RLHF_CLUSTER_TOKEN_FILE        callers' token file (`TOKEN NAME ROLES` lines, or one bare token): every service
#                                  takes its callers from it (--auth_token_file) and the orchestrator sends the first
#                                  line's token, which needs role operator (default: none, no token asked)
# Services are started with the flags they run with in docker-compose.yml and deploy/k8s.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${RLHF_CLUSTER_DIR:-$repo/runs/cluster}"
build="${RLHF_BUILD_DIR:-$repo/build}"
grpc_base="${RLHF_CLUSTER_GRPC_PORT:-50050}"
metrics_base="${RLHF_CLUSTER_METRICS_PORT:-9460}"
prometheus_port="${RLHF_CLUSTER_PROMETHEUS_PORT:-9090}"
scrape_interval="${RLHF_CLUSTER_SCRAPE_INTERVAL:-5s}"
threads="${RLHF_CLUSTER_THREADS:-1}"
token_file="${RLHF_CLUSTER_TOKEN_FILE:-}"

# Service name, gRPC service, binary path under the build folder; the order gives the port offsets (as the defaults
# 50050..50055 and 9460..9465). The orchestrator comes last: it is started once the others serve.
names=(policy-generation reference-logprob reward-scoring ppo-trainer labeling orchestrator)
declare -A offset=([orchestrator]=0 [policy-generation]=1 [reference-logprob]=2 [reward-scoring]=3 [ppo-trainer]=4
                   [labeling]=5)
declare -A grpc_service=([orchestrator]=OrchestratorService [policy-generation]=PolicyGenerationService
                         [reference-logprob]=ReferenceLogprobService [reward-scoring]=RewardScoringService
                         [ppo-trainer]=PpoTrainerService [labeling]=LabelingService)

die() { echo "local_cluster: $*" >&2; exit 1; }
binary() { local dir="${1//-/_}"; echo "$build/services/$dir/rlhf-$1"; }
port() { echo $((grpc_base + ${offset[$1]})); }
metrics_port() { echo $((metrics_base + ${offset[$1]})); }
pid_file() { echo "$state/pids/$1.pid"; }

# The pid recorded for `name`, if that process still runs the program it was started as (a recycled pid is not ours).
live_pid() {
  local file pid expected
  file="$(pid_file "$1")"
  [ -f "$file" ] || return 1
  read -r pid expected < "$file" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/exe" ] || return 1
  local exe
  exe="$(readlink "/proc/$pid/exe")" || return 1
  # A binary rebuilt while it runs shows as "<path> (deleted)": still ours.
  [ "${exe% (deleted)}" = "$expected" ]
}

# True once process `$1` has exited: gone, or a zombie left for its parent to reap. (Its /proc/PID/exe vanishes
# earlier, while the kernel is still tearing the process down, so live_pid is not the test for that.)
exited() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  stat="${stat##*) }"
  [ "${stat%% *}" = Z ]
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

healthy() { "$build/tools/cli/rlhf-health" --quiet --timeout=1s --service="rlhf.v1.${grpc_service[$1]}" "127.0.0.1:$(port "$1")"; }

# Flags the service runs with (as in docker-compose.yml).
service_flags() {
  local name="$1"
  case "$name" in
    policy-generation|reference-logprob)
      echo "--model=$state/models/policy" "--path_roots=$state/runs,$state/models" "--intra_op_threads=$threads" ;;
    reward-scoring)
      echo "--model=$state/models/reward" "--watch=$state/models/reward-checkpoints" --allow_reload \
        "--path_roots=$state/runs,$state/models" "--intra_op_threads=$threads" ;;
    ppo-trainer)
      echo "--checkpoint_root=$state/checkpoints" "--path_roots=$state/runs,$state/checkpoints,$state/models" \
        "--intra_op_threads=$threads" ;;
    labeling)
      echo "--state_dir=$state/labeling" ;;
    orchestrator)
      echo "--runs_root=$state/runs" ;;
  esac
}

# Starts `command...` detached (own session, no terminal), records "pid program" in the pid file of `name`.
start_process() {
  local name="$1"; shift
  setsid "$@" > "$state/logs/$name.log" 2>&1 < /dev/null &
  echo "$! $(readlink -f "$1")" > "$(pid_file "$name")"
}

write_prometheus_config() {
  local config="$state/prometheus/prometheus.yml" name
  {
    echo "# Written by tools/local_cluster.sh up: the scrape job of deploy/prometheus/prometheus.yml, on loopback."
    echo "global:"
    echo "  scrape_interval: $scrape_interval"
    echo "  evaluation_interval: $scrape_interval"
    echo "rule_files:"
    echo "  - $repo/deploy/prometheus/rules.yml"
    echo "scrape_configs:"
    echo "  - job_name: rlhf"
    echo "    honor_labels: true"
    echo "    static_configs:"
    for name in orchestrator "${names[@]:0:5}"; do
      echo "      - targets: [\"127.0.0.1:$(metrics_port "$name")\"]"
      echo "        labels: {service: $name}"
    done
  } > "$config"
  promtool check config "$config" > "$state/logs/promtool.log" 2>&1 \
    || { cat "$state/logs/promtool.log" >&2; die "promtool rejects $config"; }
}

up() {
  local name
  for name in "${names[@]}" prometheus; do
    if live_pid "$name"; then die "already up ($name runs; tools/local_cluster.sh down first)"; fi
  done
  command -v prometheus >/dev/null || die "no prometheus on the PATH (tools/setup.sh installs it)"
  [ -x "$build/tools/cli/rlhf" ] && [ -x "$build/tools/cli/rlhf-health" ] \
    || die "no rlhf / rlhf-health in $build/tools/cli (build first: ninja -C $build)"
  for name in "${names[@]}"; do
    [ -x "$(binary "$name")" ] || die "no executable $(binary "$name") (build first: ninja -C $build)"
    for p in "$(port "$name")" "$(metrics_port "$name")"; do
      if port_in_use "$p"; then die "port $p ($name) is in use: set RLHF_CLUSTER_GRPC_PORT / _METRICS_PORT"; fi
    done
  done
  if port_in_use "$prometheus_port"; then die "port $prometheus_port is in use: set RLHF_CLUSTER_PROMETHEUS_PORT"; fi
  if [ -n "$token_file" ] && [ ! -s "$token_file" ]; then die "RLHF_CLUSTER_TOKEN_FILE=$token_file is missing or empty"; fi
  mkdir -p "$state"/{pids,logs,models,runs,checkpoints,prometheus/data}
  rm -f "$state"/pids/*.pid

  # The initial models of a built-in-task run (as the compose and Kubernetes init jobs write them): the model
  # services serve them, and take the run's checkpoints, which have the same architecture.
  "$build/tools/cli/rlhf" init-run-models --out="$state/models" > "$state/logs/init-models.log" 2>&1 \
    || { cat "$state/logs/init-models.log" >&2; die "rlhf init-run-models failed"; }
  mkdir -p "$state/models/reward-checkpoints"

  # On any failure from here on, stop what was started.
  trap 'if [ "$?" != 0 ]; then echo "local_cluster: up failed; stopping what it started" >&2; down >&2 || true; fi' EXIT
  for name in "${names[@]}"; do
    if [ "$name" = orchestrator ]; then wait_serving "${names[@]:0:5}"; fi
    local bin flags
    bin="$(binary "$name")"
    read -r -a flags <<< "$(service_flags "$name")"
    if [ -n "$token_file" ]; then
      flags+=("--auth_token_file=$token_file")
      [ "$name" != orchestrator ] || flags+=("--services_auth_token_file=$token_file")
    fi
    start_process "$name" "$bin" --listen_address="127.0.0.1:$(port "$name")" \
      --metrics_address="127.0.0.1:$(metrics_port "$name")" --drain_delay=0s --shutdown_deadline=10s "${flags[@]}"
  done
  wait_serving orchestrator

  write_prometheus_config
  start_process prometheus "$(command -v prometheus)" --config.file="$state/prometheus/prometheus.yml" \
    --storage.tsdb.path="$state/prometheus/data" --web.listen-address="127.0.0.1:$prometheus_port" \
    --storage.tsdb.retention.time=1d
  local deadline=$(( $(date +%s) + 30 ))
  until curl -sf "http://127.0.0.1:$prometheus_port/-/ready" > /dev/null; do
    live_pid prometheus || { tail -n 20 "$state/logs/prometheus.log" >&2; die "prometheus exited"; }
    [ "$(date +%s)" -lt "$deadline" ] || die "prometheus not ready in 30 s (log: $state/logs/prometheus.log)"
    sleep 0.2
  done
  write_run_config
  echo "local_cluster: up (state in $state)"
  table
  echo
  echo "The main job on this cluster (the built-in task):"
  echo "  $build/tools/cli/rlhf run --orchestrator=127.0.0.1:$(port orchestrator) --config=$state/run.pbtxt" \
    "${token_file:+--token_file=$token_file}"
}

# A run config of the built-in task against this cluster.
write_run_config() {
  cat > "$state/run.pbtxt.tmp" <<EOF
# Written by tools/local_cluster.sh up: the built-in task on the local cluster. Add stage settings (sft { ... }
# ppo { ... }; see protos/rlhf/v1/orchestrator.proto) as you like, but keep the model: the services serve its shape.
task { builtin_task: "instructions" }
services {
  generation: "127.0.0.1:$(port policy-generation)"
  reference: "127.0.0.1:$(port reference-logprob)"
  reward: "127.0.0.1:$(port reward-scoring)"
  trainer: "127.0.0.1:$(port ppo-trainer)"
  labeling: "127.0.0.1:$(port labeling)"
}
EOF
  mv "$state/run.pbtxt.tmp" "$state/run.pbtxt"
}

# Waits until each named service reports SERVING (60 s at most each).
wait_serving() {
  local name deadline
  for name in "$@"; do
    deadline=$(( $(date +%s) + 60 ))
    until healthy "$name"; do
      live_pid "$name" || { tail -n 20 "$state/logs/$name.log" >&2; die "$name exited during start-up"; }
      [ "$(date +%s)" -lt "$deadline" ] || die "$name did not report SERVING in 60 s (log: $state/logs/$name.log)"
      sleep 0.2
    done
  done
}

table() {
  local name
  printf '%-18s %-34s %-16s %-16s %s\n' service "gRPC service" address metrics health
  for name in orchestrator "${names[@]:0:5}"; do
    local health="down"
    if live_pid "$name"; then health="$(healthy "$name" && echo SERVING || echo NOT_SERVING)"; fi
    printf '%-18s %-34s %-16s %-16s %s\n' "$name" "rlhf.v1.${grpc_service[$name]}" "127.0.0.1:$(port "$name")" \
      "127.0.0.1:$(metrics_port "$name")" "$health"
  done
  printf '%-18s %-34s %-16s\n' prometheus "http://127.0.0.1:$prometheus_port" \
    "$(live_pid prometheus && echo running || echo down)"
}

status() {
  [ -d "$state/pids" ] || die "not up (no $state/pids)"
  table
  if live_pid prometheus; then
    echo
    echo "Prometheus scrape targets (up):"
    curl -sf "http://127.0.0.1:$prometheus_port/api/v1/query?query=up" \
      | python3 -c 'import json,sys; [print("  %-18s %s" % (r["metric"].get("service", r["metric"]["job"]), r["value"][1])) for r in json.load(sys.stdin)["data"]["result"]]'
  fi
}

down() {
  [ -d "$state/pids" ] || { echo "local_cluster: not up"; return 0; }
  local name pid expected stopped=()
  # Prometheus first (it would otherwise record the services as down), then the orchestrator, then the rest.
  for name in prometheus orchestrator "${names[@]:0:5}"; do
    if live_pid "$name"; then
      read -r pid expected < "$(pid_file "$name")"
      kill -TERM "$pid" 2>/dev/null || true
      stopped+=("$name:$pid")
    fi
  done
  local entry deadline=$(( $(date +%s) + 20 )) left=()
  for entry in "${stopped[@]}"; do
    name="${entry%%:*}"
    until exited "${entry#*:}"; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "local_cluster: $name (pid ${entry#*:}) did not exit in 20 s after SIGTERM: SIGKILL" >&2
        kill -KILL "${entry#*:}" 2>/dev/null || true
        left+=("$name")
        break
      fi
      sleep 0.1
    done
  done
  rm -f "$state"/pids/*.pid
  rmdir "$state/pids" 2>/dev/null || true
  echo "local_cluster: down (stopped ${#stopped[@]} processes${left:+, ${#left[@]} of them with SIGKILL})"
  [ "${#left[@]}" -eq 0 ]
}

case "${1:-}" in
  up) up ;;
  status) status ;;
  down) down ;;
  *) sed -n '2,/^[^#]/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
