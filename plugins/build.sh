#!/usr/bin/env bash
# Rebuilds every WebAssembly component the project ships or tests with:
#   plugins/<name>/           -> plugins/dist/<name>.wasm       (built-ins, embedded in the binary)
#   examples/<name>/ (plugin) -> tests/fixtures/dist/<name>.wasm (used by the integration tests)
#   tests/fixtures/<name>/    -> tests/fixtures/dist/<name>.wasm
# A plugin crate is any of those directories whose Cargo.toml depends on switchyard-sdk.
#
# It uses rustup's wasm32-unknown-unknown target when installed. Otherwise (rustup cannot
# download here) it builds std for wasm32 from Debian's rustc-web sources, unpacked without
# installing into $SWITCHYARD_WASM_TOOLCHAIN (default ~/.cache/switchyard/wasm-toolchain).
# Paths are remapped so the output does not depend on where the repository is checked out.
#
# usage: plugins/build.sh [--check]   (--check: build into a temp dir and fail if dist differs)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
check=false
[ "${1:-}" = "--check" ] && check=true

target=wasm32-unknown-unknown
target_dir="$root/target/wasm"
out_root="$root"
if $check; then
  out_root=$(mktemp -d)
  trap 'rm -rf "$out_root"' EXIT
fi

cargo_env=()
build_std=()
if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "build.sh: using rustup's $target target" >&2
else
  tc=${SWITCHYARD_WASM_TOOLCHAIN:-$HOME/.cache/switchyard/wasm-toolchain}
  if [ ! -x "$tc/usr/bin/rustc" ]; then
    echo "build.sh: no $target target in rustup; fetching Debian's rustc-web into $tc" >&2
    command -v apt-get >/dev/null || { echo "build.sh: needs rustup's $target target or apt-get" >&2; exit 1; }
    dl=$(mktemp -d)
    (
      cd "$dl"
      if ! apt-cache show rustc-web >/dev/null 2>&1; then apt-get update -qq; fi
      # Resolve the versioned library packages rather than naming versions here.
      libstd=$(apt-cache depends libstd-rust-web-dev | awk '/Depends: libstd-rust-web-[0-9]/{print $2; exit}')
      libllvm=$(apt-cache depends "$libstd" | awk '/Depends: libllvm[0-9]/{print $2; exit}')
      apt-get download rustc-web libstd-rust-web-dev "$libstd" rust-web-src "$libllvm" >/dev/null
    )
    mkdir -p "$tc"
    for deb in "$dl"/*.deb; do dpkg -x "$deb" "$tc"; done
    rm -rf "$dl"
  fi
  rustup_bin="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin"  # rust-lld
  cargo_env=(
    "LD_LIBRARY_PATH=$tc/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    "RUSTC=$tc/usr/bin/rustc" "RUSTC_BOOTSTRAP=1" "PATH=$rustup_bin:$PATH"
  )
  build_std=(-Zbuild-std=std,panic_abort)
  remap_tc="--remap-path-prefix=$tc=/toolchain"
  target_dir="$root/target/wasm-debian"
fi

rustflags="--remap-path-prefix=$root=/switchyard --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo ${remap_tc:-}"

# Build the componentizer for the host first (with the normal toolchain).
cargo build --quiet --release -p switchyard-componentize
componentize="$root/target/release/switchyard-componentize"

plugin_dirs=()
for dir in plugins/*/ examples/*/ tests/fixtures/*/; do
  dir=${dir%/}
  [ -f "$dir/Cargo.toml" ] && grep -q '^switchyard-sdk' "$dir/Cargo.toml" && plugin_dirs+=("$dir")
done

packages=()
for dir in "${plugin_dirs[@]}"; do
  packages+=(-p "$(awk -F'"' '/^name *=/{print $2; exit}' "$dir/Cargo.toml")")
done
env "${cargo_env[@]}" CARGO_ENCODED_RUSTFLAGS="$(printf '%s' "$rustflags" | tr ' ' '\037')" \
  cargo build --quiet --locked --profile plugin --target "$target" --target-dir "$target_dir" \
  "${build_std[@]}" "${packages[@]}"

status=0
for dir in "${plugin_dirs[@]}"; do
  name=$(basename "$dir")
  crate=$(awk -F'"' '/^name *=/{print $2; exit}' "$dir/Cargo.toml" | tr - _)
  case "$dir" in
    plugins/*) dist="plugins/dist" ;;
    *) dist="tests/fixtures/dist" ;;
  esac
  mkdir -p "$out_root/$dist"
  "$componentize" "$target_dir/$target/plugin/$crate.wasm" "$out_root/$dist/$name.wasm"
  if $check && ! cmp -s "$out_root/$dist/$name.wasm" "$root/$dist/$name.wasm"; then
    echo "build.sh: $dist/$name.wasm is stale: run plugins/build.sh and commit the result" >&2
    status=1
  fi
done
if $check; then
  for f in plugins/dist/*.wasm tests/fixtures/dist/*.wasm; do
    [ -e "$f" ] && [ ! -e "$out_root/$f" ] && { echo "build.sh: $f has no source crate any more" >&2; status=1; }
  done
  [ $status = 0 ] && echo "build.sh: every committed component matches its sources" >&2
fi
exit $status
