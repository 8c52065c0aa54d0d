#!/usr/bin/env bash
# Builds the suite's container image (deploy/Dockerfile) without an image registry, and smoke-tests it.
#   tools/image.sh base     debootstrap a Debian 12 (bookworm) root file system and store it in buildah's image store
#                           as debian:bookworm-slim (done by `build` when that image is missing)
#   tools/image.sh build [--context DIR]
#                           build deploy/Dockerfile with `buildah bud --isolation chroot`, from a clean snapshot of the
#                           committed tree (git archive HEAD, plus data/gpt2 when present) or from DIR
#   tools/image.sh smoke    start every service from the image on loopback (buildah run, host network), check each
#                           answers gRPC health SERVING and serves /metrics, then stop them and check each drained (exit 0)
#   tools/image.sh size     print the image's size
# Only Debian's package mirror is needed (and the npm registry when data/gpt2 is missing): this is also how an
# air-gapped site builds the image, with its own Debian mirror in RLHF_DEBIAN_MIRROR.
# Environment:
#   RLHF_IMAGE            image name (default localhost/rlhf:latest; `build` also tags localhost/rlhf:<version>)
#   RLHF_IMAGE_WORKDIR    scratch space for the root file system, build contexts and logs (default /var/tmp/rlhf-image)
#   RLHF_DEBIAN_MIRROR    Debian mirror (default http://deb.debian.org/debian); RLHF_DEBIAN_SECURITY_MIRROR likewise
#   JOBS                  compile jobs inside the build (default: cores); NICE: niceness of the build (default 19)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${RLHF_IMAGE:-localhost/rlhf:latest}"
workdir="${RLHF_IMAGE_WORKDIR:-/var/tmp/rlhf-image}"
mirror="${RLHF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${RLHF_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
base_image="docker.io/library/debian:bookworm-slim"
jobs="${JOBS:-$(nproc)}"
niceness="${NICE:-19}"

log() { echo "image: $*"; }
die() { echo "image: $*" >&2; exit 1; }

install_tools() { "$repo/tools/setup.sh" --packages-only --list=image.txt; }

# debian:bookworm-slim made here: a minbase debootstrap, trimmed the way Debian's slim images are (no manuals, docs or
# translations; dpkg told to keep it so), with the bookworm, -updates and -security suites.
make_base() {
  local rootfs="$workdir/rootfs" start
  start=$(date +%s)
  log "debootstrap bookworm from $mirror into $rootfs"
  rm -rf "$rootfs" "$workdir/rootfs.tar"
  mkdir -p "$workdir"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$workdir/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $workdir/debootstrap.log"
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  rm -f "$rootfs/etc/apt/sources.list"
  cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,info,lintian}/* "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
    -cf "$workdir/rootfs.tar" .
  local ctr
  ctr="$(buildah from scratch)"
  buildah add --quiet "$ctr" "$workdir/rootfs.tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd bash \
    --created-by "tools/image.sh base (debootstrap --variant=minbase bookworm)" "$ctr"
  buildah commit --quiet --rm "$ctr" "$base_image" >/dev/null
  rm -rf "$rootfs" "$workdir/rootfs.tar"
  log "base $base_image ready in $(( $(date +%s) - start )) s"
}

have_image() { buildah inspect --type image "$1" >/dev/null 2>&1; }

image_size() {  # the image's size as stored (uncompressed layers), e.g. "939 MB"
  buildah images --format '{{.Size}}' "$image" | head -n 1
}

build() {
  local context=""
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --context) context="${2:?--context needs a folder}"; shift 2 ;;
      *) die "build: unknown argument '$1'" ;;
    esac
  done
  install_tools
  have_image "$base_image" || make_base
  if [ -z "$context" ]; then
    # A clean snapshot of the committed tree: edits in progress in the working tree stay out of the image.
    context="$workdir/context"
    rm -rf "$context"
    mkdir -p "$context"
    git -C "$repo" archive HEAD | tar -x -C "$context"
    if [ -f "$repo/data/gpt2/encoder.json" ] && [ -f "$repo/data/gpt2/vocab.bpe" ]; then
      mkdir -p "$context/data"
      cp -r "$repo/data/gpt2" "$context/data/gpt2"
    fi
    log "context: git archive HEAD ($(git -C "$repo" rev-parse --short HEAD))$([ -d "$context/data/gpt2" ] && echo ' + data/gpt2')"
  fi
  [ -f "$context/deploy/Dockerfile" ] || die "$context/deploy/Dockerfile is missing"
  local version start elapsed
  version="$(sed -n 's/^project(rlhf VERSION \([0-9.]*\).*/\1/p' "$context/CMakeLists.txt")"
  start=$(date +%s)
  log "building $image (version ${version:-unknown}) with $jobs jobs at nice $niceness; log in $workdir/build.log"
  if ! nice -n "$niceness" buildah bud --isolation chroot --pull=never --layers --network host \
      --build-arg "JOBS=$jobs" -f "$context/deploy/Dockerfile" -t "$image" ${version:+-t "localhost/rlhf:$version"} \
      "$context" > "$workdir/build.log" 2>&1; then
    tail -n 30 "$workdir/build.log" >&2
    die "build failed; see $workdir/build.log"
  fi
  elapsed=$(( $(date +%s) - start ))
  log "built $image in $elapsed s ($(( elapsed / 60 )) min $(( elapsed % 60 )) s); size $(image_size)"
}

size() {
  have_image "$image" || die "no image $image (run tools/image.sh build)"
  echo "$image: $(image_size)"
}

# Free loopback TCP ports, one per argument count.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# The process buildah run started inside the container: the last descendant of the buildah process `$1`.
leaf_process() {
  local pid="$1" child
  while child="$(pgrep -P "$pid" | head -n 1)" && [ -n "$child" ]; do pid="$child"; done
  echo "$pid"
}

smoke() {
  install_tools
  have_image "$image" || die "no image $image (run tools/image.sh build first)"
  local names=(orchestrator policy-generation reference-logprob reward-scoring ppo-trainer labeling)
  local grpc_names=(OrchestratorService PolicyGenerationService ReferenceLogprobService RewardScoringService
                    PpoTrainerService LabelingService)
  # Globals, not locals: the EXIT trap below runs after this function returned.
  smoke_state="$(mktemp -d "$workdir/smoke.XXXXXX")"
  smoke_ctr="$(buildah from --quiet --pull=never "$image")"
  pids=()
  local state="$smoke_state" ctr="$smoke_ctr"
  cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    buildah rm "$smoke_ctr" >/dev/null 2>&1 || true
    rm -rf "$smoke_state"
  }
  trap cleanup EXIT
  # The state folders live on the host, as volumes would (docker-compose.yml mounts the same paths): the image's
  # non-root user writes them.
  local volume mounts=()
  for volume in models runs checkpoints labeling; do
    mkdir -p "$state/$volume"
    chown 10001:10001 "$state/$volume"
    mounts+=(-v "$state/$volume:/var/lib/rlhf/$volume")
  done
  run_in() { buildah run --isolation chroot --network host "${mounts[@]}" "$ctr" -- "$@"; }
  run_in rlhf init-run-models --out=/var/lib/rlhf/models > "$state/init.log" 2>&1 \
    || { cat "$state/init.log" >&2; die "rlhf init-run-models failed in the image"; }
  read -r -a ports <<< "$(free_ports 12)"
  local i
  for i in "${!names[@]}"; do
    local args=(--listen_address="127.0.0.1:${ports[$i]}" --metrics_address="127.0.0.1:${ports[$((i + 6))]}")
    # The flags each service has in docker-compose.yml that point it at its volume.
    case "${names[$i]}" in
      orchestrator) args+=(--runs_root=/var/lib/rlhf/runs) ;;
      policy-generation|reference-logprob) args+=(--model=/var/lib/rlhf/models/policy) ;;
      reward-scoring) args+=(--model=/var/lib/rlhf/models/reward) ;;
      ppo-trainer) args+=(--checkpoint_root=/var/lib/rlhf/checkpoints) ;;
      labeling) args+=(--state_dir=/var/lib/rlhf/labeling) ;;
    esac
    run_in "rlhf-${names[$i]}" "${args[@]}" > "$state/${names[$i]}.log" 2>&1 &
    pids+=($!)
  done
  local failed=0 deadline=$(( $(date +%s) + 60 ))
  for i in "${!names[@]}"; do
    local address="127.0.0.1:${ports[$i]}" service="rlhf.v1.${grpc_names[$i]}"
    until run_in rlhf-health --quiet --service="$service" "$address" 2> /dev/null; do
      if [ "$(date +%s)" -ge "$deadline" ] || ! kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "smoke: ${names[$i]} did not report SERVING at $address; its log:" >&2
        tail -n 20 "$state/${names[$i]}.log" >&2
        failed=1
        break
      fi
      sleep 0.5
    done
    [ "$failed" = 0 ] || break
    local metrics
    metrics="$(curl -sf "http://127.0.0.1:${ports[$((i + 6))]}/metrics")" \
      || { echo "smoke: ${names[$i]}: no /metrics at 127.0.0.1:${ports[$((i + 6))]}" >&2; failed=1; break; }
    grep -q "^rlhf_build_info{service=\"${names[$i]}\"" <<< "$metrics" \
      || { echo "smoke: ${names[$i]}: /metrics lacks rlhf_build_info" >&2; failed=1; break; }
    printf 'smoke: %-18s %-40s SERVING, /metrics at 127.0.0.1:%s\n' "${names[$i]}" "$service $address" \
      "${ports[$((i + 6))]}"
  done
  # Drain: SIGTERM to each service process (buildah run would stop it with SIGKILL), which must exit 0; buildah run
  # returns the service's exit code.
  for i in "${!names[@]}"; do
    kill -TERM "$(leaf_process "${pids[$i]}")" 2>/dev/null || true
  done
  for i in "${!names[@]}"; do
    local code=0
    wait "${pids[$i]}" || code=$?
    if [ "$code" != 0 ]; then
      echo "smoke: ${names[$i]} exited with $code after SIGTERM" >&2
      failed=1
    fi
  done
  pids=()
  [ "$failed" = 0 ] || die "smoke test failed"
  log "smoke test passed: 6 services from $image served health and /metrics and drained cleanly"
}

case "${1:-}" in
  base) install_tools; make_base ;;
  build) shift; build "$@" ;;
  smoke) smoke ;;
  size) size ;;
  *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
