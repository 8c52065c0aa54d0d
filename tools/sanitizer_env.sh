# Sourced by tools/test.sh --sanitize and tools/fuzz.sh: the sanitizer runtime options of our ASan + UBSan runs.
# Values already in the environment win (e.g. ASAN_OPTIONS=detect_leaks=0 to look at one report at a time).
repo="${repo:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# print_stacktrace: UBSan reports name the call path, not only the line. halt_on_error: the build already stops at
# the first report (-fno-sanitize-recover=all); this keeps it so for code built without that flag.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}"
