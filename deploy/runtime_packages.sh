#!/usr/bin/env bash
# Prints the Debian packages that own every shared library the given executables load: the whole ldd closure, with
# symlinks and Debian's alternatives resolved, so libblas.so.3 maps to libopenblas0-openmp when that is the BLAS the
# build stage has. deploy/Dockerfile installs exactly this list in its runtime stage, so the runtime libraries follow
# from tools/packages/build.txt and the binaries, with no second list to keep in step.
#   deploy/runtime_packages.sh BINARY... > runtime-packages.txt
# Fails, naming the library, when a library is missing or no installed package owns it.
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }

declare -A libraries=()  # library path -> the binary that needs it
for binary in "$@"; do
  [ -x "$binary" ] || { echo "runtime_packages: $binary is not an executable" >&2; exit 1; }
  listing="$(ldd "$binary")"
  if grep -q 'not found' <<< "$listing"; then
    echo "runtime_packages: $binary: $(grep 'not found' <<< "$listing" | head -n 1)" >&2
    exit 1
  fi
  while read -r library; do
    libraries["$library"]="$binary"
  done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<< "$listing")
done

# Since Debian's merged /usr, a library can be listed by its package under /lib or /usr/lib, and reached through a
# symlink (an alternative or the soname link): ask dpkg about every spelling at once, one slow query in all.
declare -A spellings=()
for library in "${!libraries[@]}"; do
  real="$(realpath -e "$library")"
  for candidate in "$library" "$real"; do
    spellings["$candidate"]="$library"; spellings["${candidate#/usr}"]="$library"; spellings["/usr${candidate#/usr}"]="$library"
  done
done
declare -A owner=()  # library path -> package
while IFS= read -r line; do
  case "$line" in diversion*) continue ;; esac
  package="${line%%:*}"
  path="${line#*: }"
  [ -n "${spellings[$path]:-}" ] && owner["${spellings[$path]}"]="$package"
done < <(dpkg-query -S "${!spellings[@]}" 2>/dev/null || true)

declare -A packages=()
for library in "${!libraries[@]}"; do
  if [ -z "${owner[$library]:-}" ]; then
    echo "runtime_packages: no installed Debian package owns $library (needed by ${libraries[$library]})" >&2
    exit 1
  fi
  packages["${owner[$library]}"]=1
done
printf '%s\n' "${!packages[@]}" | sort
