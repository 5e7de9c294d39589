#!/usr/bin/env bash
# Runs the libFuzzer targets under fuzz/ (cargo-fuzz) on the stable toolchain, each for a fixed
# time. Inputs that grow coverage are kept in fuzz/corpus/<target> (not committed), so later runs
# start from them; fuzz/seeds/<target> (committed) seeds every run, and fuzz/dicts/<target>.dict
# gives libFuzzer the target's tokens.
#
# usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [target...]
#   SECONDS_PER_TARGET  how long each target runs (default 60)
#   target...           targets to run (default: all, as `cargo fuzz list` gives them)
#
# environment:
#   FUZZ_ASAN=1         build with AddressSanitizer (RUSTC_BOOTSTRAP=1 on stable) instead of
#                       coverage only (-s none); slower, and catches memory errors in unsafe code
#   FUZZ_TOOLCHAIN      the rustup toolchain to use (default stable; nightly is not needed)
#   FUZZ_ARGS           extra libFuzzer flags, e.g. FUZZ_ARGS="-jobs=2 -workers=2"
#
# Exits 0 when no target crashed. On a crash the run goes on with the next target, then the
# script prints each crashing input (under fuzz/artifacts/<target>/) with the command that
# replays it, and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [SECONDS_PER_TARGET] [target...]" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))

cargo=(cargo)
if command -v rustup >/dev/null 2>&1; then
  cargo=(cargo "+${FUZZ_TOOLCHAIN:-stable}")
fi

if ! "${cargo[@]}" fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  "${cargo[@]}" install cargo-fuzz --locked
fi

if [ "${FUZZ_ASAN:-0}" = 1 ]; then
  # cargo-fuzz's default sanitizer is address; its -Zsanitizer flag needs RUSTC_BOOTSTRAP on stable.
  # Its own target directory, so switching modes does not rebuild everything.
  export RUSTC_BOOTSTRAP=1
  sanitizer=(--target-dir fuzz/target/asan)
  mode="AddressSanitizer"
else
  sanitizer=(-s none)
  mode="no sanitizer"
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${cargo[@]}" fuzz list)
fi

echo "building ${targets[*]} ($mode)"
for target in "${targets[@]}"; do
  "${cargo[@]}" fuzz build "${sanitizer[@]}" "$target"
done

logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
crashes=()
for target in "${targets[@]}"; do
  echo "=== $target: ${seconds}s ($mode)"
  marker=$(mktemp)
  log="$logs/$target.log"
  # New inputs go to the first corpus directory; the seeds are only read.
  corpora=("fuzz/corpus/$target")
  mkdir -p "${corpora[0]}"
  [ -d "fuzz/seeds/$target" ] && corpora+=("fuzz/seeds/$target")
  flags=(-max_total_time="$seconds")
  [ -f "fuzz/dicts/$target.dict" ] && flags+=(-dict="fuzz/dicts/$target.dict")
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  if "${cargo[@]}" fuzz run "${sanitizer[@]}" "$target" "${corpora[@]}" -- "${flags[@]}" ${FUZZ_ARGS:-} 2>&1 | tee "$log"; then
    echo "=== $target: no crash ($(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true))"
  else
    failed+=("$target")
    found=0
    while IFS= read -r artifact; do
      crashes+=("$target $artifact")
      found=1
    done < <(find "fuzz/artifacts/$target" -type f -newer "$marker" 2>/dev/null)
    [ $found = 1 ] || echo "$target failed without saving an input; see $log"
  fi
  rm -f "$marker"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "FAILED: ${failed[*]} (logs in $logs)"
  for crash in "${crashes[@]}"; do
    read -r target artifact <<<"$crash"
    echo "$target crashed; input saved in $artifact"
    echo "  replay: ${cargo[*]} fuzz run ${sanitizer[*]} $target $artifact"
    echo "  show:   ${cargo[*]} fuzz fmt ${sanitizer[*]} $target $artifact"
  done
  exit 1
fi
echo "no crashes (${targets[*]}, ${seconds}s each)"
