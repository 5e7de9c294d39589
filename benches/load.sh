#!/usr/bin/env bash
# Load comparison on loopback, in one run: Switchyard, a bare Pingora proxy (examples/bare_pingora.rs)
# and nginx, each with one worker thread pinned to CPU 0, in front of the same nginx origin, with
# wrk (pinned to CPU 1) as the client. Prints requests/s, latency and CPU µs per request of each
# proxy process, and the ratios to the bare Pingora proxy. Switchyard and nginx are also measured
# terminating HTTPS (keep-alive, the same ECDSA P-256 certificate, TLS 1.3), as a ratio to each other.
# switchyard-lenient is the router-only setup on a lenient listener (Pingora's own HTTP/1 parsing):
# its ratio to switchyard is the cost of the strict parser.
#
# A shared 2-core machine is noisy (run-to-run swings of 20% were seen), so the proxies are
# measured in ROUNDS rounds, in a rotating order, each proxy started fresh and alone on CPU 0,
# and the medians are reported.
#
# CPU time on a shared machine swings from run to run; instructions do not. MEASURE=instructions
# counts instead the user-space instructions each proxy process executes per request, under
# valgrind's callgrind (counting switched on only around a fixed number of requests sent with
# h2load, after a warm-up), once per proxy, and prints the ratios to the bare Pingora proxy. It
# leaves out the kernel's share and what cache misses cost, so it complements the CPU figure
# rather than replacing it; it is the figure to compare two builds with (SWITCHYARD_BIN).
#
# MEASURE=cache does the same count with callgrind's cache and branch simulation on, and adds per
# request the simulated first-level instruction and data cache misses, last-level misses and
# mispredicted branches, and an estimate of cycles from them (see cycle_model below). It is the
# figure that explains the gap between the instruction ratio and the CPU ratio: this VM exposes
# no hardware counters (perf stat reports cycles as <not supported>).
#
# usage: benches/load.sh   (ROUNDS=3 DURATION=5 CONNECTIONS=32 WARMUP=1 to change the run;
#        PROXIES="bare-pingora switchyard" to measure only some; SWITCHYARD_BIN=path (and BARE_BIN=path)
#        to try other builds;
#        MEASURE=instructions REQUESTS=4000 to count instructions instead of CPU time;
#        MEASURE=cache REQUESTS=2000 to add simulated cache misses and mispredicted branches)
# needs: nginx (Debian nginx-light), wrk, taskset; for MEASURE=instructions or cache also valgrind and
#        h2load (nghttp2-client). Traffic stays on 127.0.0.1 and stops by itself.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration=${DURATION:-5}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-32}
warmup=${WARMUP:-1}
measure_mode=${MEASURE:-cpu}
requests_counted=${REQUESTS:-4000}
for tool in nginx wrk taskset python3 openssl; do
  command -v "$tool" >/dev/null || { echo "load.sh: $tool is required (apt-get install nginx-light wrk util-linux)" >&2; exit 1; }
done
case $measure_mode in
  cpu) launch=(taskset -c 0) ;;
  instructions|cache)
    for tool in valgrind callgrind_control h2load; do
      command -v "$tool" >/dev/null || { echo "load.sh: $tool is required (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
    done
    # Counting starts switched off; each proxy writes its counts to callgrind.<pid> on exit.
    launch=(taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --smc-check=all-non-file
      --callgrind-out-file="%q{LOAD_WORK}/callgrind.%p")
    [ "$measure_mode" = cache ] && launch+=(--cache-sim=yes --branch-sim=yes) ;;
  *) echo "load.sh: MEASURE is cpu, instructions or cache, not $measure_mode" >&2; exit 1 ;;
esac

cargo build --quiet --release --bin switchyard --example bare_pingora
switchyard="${SWITCHYARD_BIN:-$root/target/release/switchyard}"
bare="${BARE_BIN:-$root/target/release/examples/bare_pingora}"

work=$(mktemp -d)
export LOAD_WORK=$work
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  [ -f "$work/origin.pid" ] && kill "$(cat "$work/origin.pid")" 2>/dev/null || true
  [ -s "$work/nginx-proxy.pid" ] && kill "$(cat "$work/nginx-proxy.pid")" 2>/dev/null || true
  [ -s "$work/nginx-https.pid" ] && kill "$(cat "$work/nginx-https.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
origin_port=$(free_port); nginx_port=$(free_port); bare_port=$(free_port); sy_port=$(free_port); chain_port=$(free_port)
nginx_tls_port=$(free_port); sy_tls_port=$(free_port); sy_tls_http_port=$(free_port); lenient_port=$(free_port)

# One certificate for both HTTPS proxies.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost" -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null

nginx_conf() { # $1 name, $2 cpu, $3 server block
  cat > "$work/$1.conf" <<CONF
worker_processes 1;
worker_cpu_affinity $2;
daemon on;
pid $work/$1.pid;
error_log $work/$1.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server 127.0.0.1:$origin_port; keepalive 128; }
  $3
}
CONF
}
# The origin answers a small fixed body; it runs on CPU 1 with the client.
# It listens on four loopback addresses: the chain's upstream has four backends, and an upstream
# lists each address once.
nginx_conf origin 10 "server { listen 127.0.0.1:$origin_port; listen 127.0.0.2:$origin_port; listen 127.0.0.3:$origin_port; listen 127.0.0.4:$origin_port; keepalive_requests 1000000; location / { return 200 'hello from the origin\n'; } }"
nginx_conf nginx-proxy 01 "server { listen 127.0.0.1:$nginx_port; keepalive_requests 1000000; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx_conf nginx-https 01 "server { listen 127.0.0.1:$nginx_tls_port ssl; ssl_certificate $work/tls.pem; ssl_certificate_key $work/tls.key; ssl_protocols TLSv1.3; keepalive_requests 1000000; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
nginx -c "$work/origin.conf" -p "$work" -e "$work/origin.error.log"

# switchyard: the router alone (the foundation's figure); switchyard-chain: the full default chain
# of built-ins (router, header policy, an A/B split by tag with sticky cookies, round-robin over
# the variant's two backends, and the split's response side).
cat > "$work/switchyard.toml" <<CONF
[server]
listen = ["127.0.0.1:$sy_port"]
threads = 1
header_policy = false

[[upstream]]
name = "origin"
backends = [{ address = "127.0.0.1:$origin_port" }]

[[site]]
hosts = ["*"]

[[site.route]]
upstream = "origin"
CONF

sed -e "s/127.0.0.1:$sy_port/127.0.0.1:$lenient_port/" \
  -e "s/^header_policy = false$/header_policy = false\nlenient_listeners = [\"127.0.0.1:$lenient_port\"]/" \
  "$work/switchyard.toml" > "$work/switchyard-lenient.toml"
grep -q lenient_listeners "$work/switchyard-lenient.toml" || { echo "load.sh: the lenient config was not made" >&2; exit 1; }

cat > "$work/switchyard-chain.toml" <<CONF
[server]
listen = ["127.0.0.1:$chain_port"]
threads = 1

[[upstream]]
name = "origin"
backends = [
  { address = "127.0.0.1:$origin_port", tags = ["a"] },
  { address = "127.0.0.2:$origin_port", tags = ["a"] },
  { address = "127.0.0.3:$origin_port", tags = ["b"] },
  { address = "127.0.0.4:$origin_port", tags = ["b"] },
]

[[site]]
hosts = ["*"]

[[site.route]]
upstream = "origin"
split = { variants = [{ tag = "a", weight = 90 }, { tag = "b", weight = 10 }] }
CONF

# switchyard-https: the router-only setup behind an HTTPS listener with the same certificate.
cat > "$work/switchyard-https.toml" <<CONF
[server]
listen = ["127.0.0.1:$sy_tls_http_port"]
tls_listen = ["127.0.0.1:$sy_tls_port"]
threads = 1
header_policy = false

[[upstream]]
name = "origin"
backends = [{ address = "127.0.0.1:$origin_port" }]

[[site]]
hosts = ["localhost"]
tls = { cert = "tls.pem", key = "tls.key" }

[[site.route]]
upstream = "origin"
CONF

url_of() { # name port
  case $1 in *-https) echo "https://localhost:$2/" ;; *) echo "http://127.0.0.1:$2/" ;; esac
}

wait_for() { # port [url]
  local url=${2:-http://127.0.0.1:$1/}
  # A proxy under valgrind takes a while to start.
  local tries=200; [ "$measure_mode" != cpu ] && tries=2400
  for _ in $(seq 1 "$tries"); do
    curl -fsk -o /dev/null "$url" && return 0
    sleep 0.05
  done
  echo "load.sh: nothing answers on port $1" >&2; exit 1
}
wait_for "$origin_port"

# Starts one proxy alone on CPU 0; sets $port and $proxy_pids.
start_proxy() {
  case $1 in
    switchyard)
      SWITCHYARD_LOG=warn "${launch[@]}" "$switchyard" run --config "$work/switchyard.toml" >"$work/switchyard.log" 2>&1 &
      pids+=($!); proxy_pids=$!; port=$sy_port ;;
    switchyard-lenient)
      SWITCHYARD_LOG=warn "${launch[@]}" "$switchyard" run --config "$work/switchyard-lenient.toml" >"$work/switchyard-lenient.log" 2>&1 &
      pids+=($!); proxy_pids=$!; port=$lenient_port ;;
    switchyard-https)
      SWITCHYARD_LOG=warn "${launch[@]}" "$switchyard" run --config "$work/switchyard-https.toml" >"$work/switchyard-https.log" 2>&1 &
      pids+=($!); proxy_pids=$!; port=$sy_tls_port ;;
    switchyard-chain|switchyard-chain-returning)
      SWITCHYARD_LOG=warn "${launch[@]}" "$switchyard" run --config "$work/switchyard-chain.toml" >"$work/switchyard-chain.log" 2>&1 &
      pids+=($!); proxy_pids=$!; port=$chain_port ;;
    bare-pingora)
      "${launch[@]}" "$bare" --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$origin_port" --threads 1 >"$work/bare.log" 2>&1 &
      pids+=($!); proxy_pids=$!; port=$bare_port ;;
    nginx)
      nginx -c "$work/nginx-proxy.conf" -p "$work" -e "$work/nginx-proxy.error.log"
      wait_for "$nginx_port"
      local master; master=$(cat "$work/nginx-proxy.pid")
      proxy_pids="$master $(pgrep -P "$master" | tr '\n' ' ')"; port=$nginx_port ;;
    nginx-https)
      nginx -c "$work/nginx-https.conf" -p "$work" -e "$work/nginx-https.error.log"
      wait_for "$nginx_tls_port" "$(url_of nginx-https "$nginx_tls_port")"
      local master; master=$(cat "$work/nginx-https.pid")
      proxy_pids="$master $(pgrep -P "$master" | tr '\n' ' ')"; port=$nginx_tls_port ;;
  esac
  wait_for "$port" "$(url_of "$1" "$port")"
}
stop_proxy() {
  case $1 in
    nginx) nginx -s quit -c "$work/nginx-proxy.conf" -p "$work" 2>/dev/null || true; sleep 0.3 ;;
    nginx-https) nginx -s quit -c "$work/nginx-https.conf" -p "$work" 2>/dev/null || true; sleep 0.3 ;;
    # SIGINT: Pingora exits at once (SIGTERM would wait out its graceful-shutdown period).
    *) kill -INT $proxy_pids 2>/dev/null || true; wait $proxy_pids 2>/dev/null || true ;;
  esac
}

# CPU time (user+system, in clock ticks) of a process and its children threads.
cpu_ticks() { # pids...
  local total=0
  for pid in "$@"; do
    read -r -a f < "/proc/$pid/stat"
    total=$((total + f[13] + f[14]))
  done
  echo "$total"
}

hz=$(getconf CLK_TCK)
results=()
measure() { # name port pids...
  local name=$1 port=$2; shift 2
  returning_client "$name" "$port"
  local url; url=$(url_of "$name" "$port")
  # wrk resolves localhost itself; its connections are kept alive, so handshakes are a
  # negligible share of an HTTPS run.
  taskset -c 1 wrk -t1 -c"$connections" -d"${warmup}s" "${client[@]}" "$url" >/dev/null
  local before after out
  before=$(cpu_ticks "$@")
  out=$(taskset -c 1 wrk -t1 -c"$connections" -d"${duration}s" --latency "${client[@]}" "$url")
  after=$(cpu_ticks "$@")
  local requests rps p50 p99 errors
  requests=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/{print}' <<<"$out" | tr '\n' ' ')
  local us_per_req
  us_per_req=$(python3 -c "print(f'{($after-$before)/$hz*1e6/$requests:.1f}')")
  # $round: the round this measurement belongs to (set by the loop below).
  results+=("$name|$rps|$us_per_req|$p50|$p99|$requests|$round|${errors:-none}")
}
# The returning client's header, for switchyard-chain-returning (sets $client); see measure.
returning_client() { # name port
  client=()
  if [ "$1" = switchyard-chain-returning ]; then
    local cookie
    cookie=$(curl -fsS -D - -o /dev/null "http://127.0.0.1:$2/" | tr -d '\r' \
      | awk -F': ' 'tolower($1)=="set-cookie" { split($2, kv, ";"); print kv[1]; exit }')
    [ -n "$cookie" ] || { echo "load.sh: the chain set no sticky cookie" >&2; exit 1; }
    client=(-H "Cookie: $cookie")
  fi
}

# MEASURE=instructions or cache: counts the instructions (and with cache, the simulated misses) of
# $requests_counted requests (after a warm-up) in the proxy process $3, and stops it so that
# callgrind writes its counts. Each entry of counted is "name|event=total,event=total...".
counted=()
measure_instructions() { # name port pid
  local name=$1 port=$2 pid=$3 url
  url=$(url_of "$name" "$port")
  returning_client "$name" "$port"
  h2load --h1 -n 400 -c 8 "${client[@]}" "$url" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  local out
  out=$(h2load --h1 -n "$requests_counted" -c 8 "${client[@]}" "$url")
  callgrind_control -i off "$pid" >/dev/null 2>&1
  stop_proxy "$name"
  local ok totals
  ok=$(awk '/^status codes:/{print $3}' <<<"$out")
  totals=$(awk '/^events:/{for (i = 2; i <= NF; i++) name[i] = $i}
    /^totals:/{for (i = 2; i <= NF; i++) printf "%s%s=%s", (i > 2 ? "," : ""), name[i], $i}' "$work/callgrind.$pid")
  [ "$ok" = "$requests_counted" ] || { echo "load.sh: $name answered $ok of $requests_counted requests with 2xx" >&2; exit 1; }
  counted+=("$name|$totals")
}

read -r -a names <<<"${PROXIES:-bare-pingora switchyard switchyard-lenient switchyard-chain switchyard-chain-returning nginx switchyard-https nginx-https}"
count=${#names[@]}
if [ "$measure_mode" != cpu ]; then
  echo
  echo "Instructions per request (user space, callgrind): $requests_counted requests per proxy after 400 of warm-up, 8 connections"
  [ "$measure_mode" = cache ] && echo "with simulated caches (valgrind's default geometry for this CPU) and branch predictors"
  for name in "${names[@]}"; do
    case $name in nginx*|*-https) echo "  $name: skipped (only the Pingora-based proxies over plain HTTP are counted)"; continue ;; esac
    start_proxy "$name"
    measure_instructions "$name" "$port" "$proxy_pids"
  done
  python3 - "$requests_counted" "${counted[@]}" <<'PY'
import sys
requests = int(sys.argv[1])
rows = {}
for row in sys.argv[2:]:
    name, totals = row.split('|')
    rows[name] = {k: int(v) / requests for k, v in (kv.split('=') for kv in totals.split(','))}

def cycle_model(e):
    """A rough estimate of cycles: 4 instructions retired per cycle when nothing stalls, 10
    cycles per first-level miss served by the next level, 150 per last-level miss, 15 per
    mispredicted branch. Crude, but on this machine its ratios land near the measured CPU ratios."""
    return (e['Ir'] / 4 + 10 * (e['I1mr'] + e['D1mr'] + e['D1mw'])
            + 150 * (e['ILmr'] + e['DLmr'] + e['DLmw']) + 15 * (e['Bcm'] + e['Bim']))

base = rows.get('bare-pingora')
for name, e in rows.items():
    ratio = f"  x{e['Ir'] / base['Ir']:.3f} of bare-pingora" if base else ""
    print(f"  {name:<27} {e['Ir']:>9,.0f} instructions/request{ratio}")
if all('I1mr' in e for e in rows.values()):
    print()
    print(f"  {'per request':<27} {'I1 misses':>9} {'D1 misses':>9} {'LL misses':>9} {'mispredicts':>11} {'est. cycles':>11}")
    for name, e in rows.items():
        cycles = cycle_model(e)
        ratio = f"  x{cycles / cycle_model(base):.3f} of bare-pingora" if base else ""
        print(f"  {name:<27} {e['I1mr']:>9,.0f} {e['D1mr'] + e['D1mw']:>9,.0f}"
              f" {e['ILmr'] + e['DLmr'] + e['DLmw']:>9,.0f} {e['Bcm'] + e['Bim']:>11,.0f} {cycles:>11,.0f}{ratio}")
PY
  exit 0
fi
for round in $(seq 1 "$rounds"); do
  for i in $(seq 0 $((count - 1))); do
    name=${names[$(( (i + round) % count ))]}
    start_proxy "$name"
    # shellcheck disable=SC2086
    measure "$name" "$port" $proxy_pids
    stop_proxy "$name"
  done
done

echo
echo "Loopback load: $rounds rounds of ${duration}s per proxy, $connections connections, 1 proxy thread on CPU 0, wrk + origin on CPU 1"
printf '%-27s %12s %14s %10s %10s %10s  %s\n' proxy "requests/s" "CPU µs/req" p50 p99 requests errors
for row in "${results[@]}"; do
  IFS='|' read -r name rps us p50 p99 n _round err <<<"$row"
  printf '%-27s %12s %14s %10s %10s %10s  %s\n' "$name" "$rps" "$us" "$p50" "$p99" "$n" "$err"
done
python3 - "${results[@]}" <<'PY'
import statistics, sys
rows = {}
by_round = {}
for r in sys.argv[1:]:
    f = r.split('|')
    rows.setdefault(f[0], []).append((float(f[1]), float(f[2])))
    by_round.setdefault(f[6], {})[f[0]] = float(f[2])
med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in rows.items()}
print("\nmedians over rounds:")
for name in [n for n in ('bare-pingora', 'switchyard', 'switchyard-lenient', 'switchyard-chain', 'switchyard-chain-returning', 'nginx', 'switchyard-https', 'nginx-https') if n in med]:
    print(f"  {name:<27} {med[name][0]:>10.0f} requests/s {med[name][1]:>8.1f} CPU µs/request")
base = med.get('bare-pingora')
for name in [n for n in ('switchyard', 'switchyard-chain', 'switchyard-chain-returning', 'nginx') if n in med and base]:
    # The spread of the same ratio taken within each round: how far one run can be trusted.
    per_round = sorted(r[name] / r['bare-pingora'] for r in by_round.values() if name in r and 'bare-pingora' in r)
    spread = f" (x{per_round[0]:.3f} to x{per_round[-1]:.3f} within single rounds)" if len(per_round) > 1 else ""
    print(f"{name} / bare-pingora: requests/s x{med[name][0] / base[0]:.3f}, CPU per request x{med[name][1] / base[1]:.3f}{spread}")
if 'switchyard' in med and 'switchyard-lenient' in med:
    a, b = med['switchyard'], med['switchyard-lenient']
    print(f"switchyard (strict) / switchyard-lenient: CPU per request x{a[1] / b[1]:.3f} (the strict parser's cost)")
if 'switchyard-https' in med and 'nginx-https' in med:
    a, b = med['switchyard-https'], med['nginx-https']
    print(f"switchyard-https / nginx-https: requests/s x{a[0] / b[0]:.3f}, CPU per request x{a[1] / b[1]:.3f}")
PY
