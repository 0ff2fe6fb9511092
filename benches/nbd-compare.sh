#!/usr/bin/env bash
# Throughput of `nbd-copy` (examples/, built on nbd-client) beside libnbd's `nbdcopy`, same
# connection count, reading a 4 GiB export to null over loopback TCP:
#   nbdkit memory 4G (filled with random data) and qemu-nbd (raw file in /dev/shm), each plain
#   and with TLS (x509 credentials generated here with openssl).
# Prints a table of MB/s (10^6 bytes/s) and the ratio ours / nbdcopy (target: >= 1.0). Each tool
# runs RUNS times per row (default 5), alternating with the other, and the median time counts:
# on 2 cores client and server share the CPU, so one run can be off by 20% either way.
#
# Usage: [RUNS=N] benches/nbd-compare.sh [CONNECTIONS...]   (default: 1 4)
# Needs: nbdkit, qemu-nbd, nbdcopy, openssl; ~13 GiB of free memory; a few minutes.
# Note: nbdcopy caps its connections at the number of online CPUs (spec nbd-cbt.md §5.1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

connections=("$@")
((${#connections[@]})) || connections=(1 4)
size=$((4 << 30))
runs=${RUNS:-5}

for tool in nbdkit qemu-nbd nbdcopy openssl; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

cargo build --release --quiet -p examples --bin nbd-copy
ours=target/release/nbd-copy

work=$(mktemp -d /dev/shm/nbd-compare.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2; return 1
}
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

echo "preparing 4 GiB of random data and TLS credentials in $work ..." >&2
head -c "$size" /dev/urandom > "$work/src.raw"
pki="$work/pki"
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=bench-ca \
    -keyout ca-key.pem -out ca-cert.pem \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > server.ext
  openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
    -extfile server.ext -out server-cert.pem 2>/dev/null
)

# seconds for a command, measured here (nbdcopy prints nothing).
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  echo "$start $end" | awk '{ printf "%.3f", $2 - $1 }'
}
mbps() { awk -v b="$size" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

printf '%-16s %-5s %5s %12s %12s %7s\n' server tls conns nbdcopy_MB/s ours_MB/s ratio
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
row() { # name tls conns nbdcopy-uri our-args...
  local name=$1 tls=$2 conns=$3 uri=$4
  shift 4
  local ref_times=() our_times=() _
  for _ in $(seq "$runs"); do
    ref_times+=("$(timed nbdcopy --connections="$conns" "$uri" null:)")
    our_times+=("$(timed "$ours" -C "$conns" "$@" /dev/null)")
  done
  local ref ours_rate
  ref=$(mbps "$(echo "${ref_times[*]}" | median)")
  ours_rate=$(mbps "$(echo "${our_times[*]}" | median)")
  printf '%-16s %-5s %5s %12s %12s %7s\n' "$name" "$tls" "$conns" "$ref" "$ours_rate" \
    "$(awk -v a="$ours_rate" -v b="$ref" 'BEGIN { printf "%.2f", a / b }')"
}

tls_uri_args=(--tls-ca "$pki/ca-cert.pem" --server-name 127.0.0.1)

# nbdkit memory, plain then TLS (filled from the random file each time).
for tls in no yes; do
  port=$(free_port)
  if [ "$tls" = yes ]; then
    nbdkit -f -i 127.0.0.1 -p "$port" --tls=require --tls-certificates="$pki" memory 4G &
    uri="nbds://127.0.0.1:$port/?tls-certificates=$pki"
    ours_src=("nbds://127.0.0.1:$port/" "${tls_uri_args[@]}")
  else
    nbdkit -f -i 127.0.0.1 -p "$port" memory 4G &
    uri="nbd://127.0.0.1:$port/"
    ours_src=("nbd://127.0.0.1:$port/")
  fi
  pids+=($!)
  wait_port "$port"
  nbdcopy "$work/src.raw" "$uri"
  for conns in "${connections[@]}"; do
    row "nbdkit-memory" "$tls" "$conns" "$uri" "${ours_src[@]}"
  done
  stop_servers
done

# qemu-nbd on the raw file (page cache), plain then TLS.
for tls in no yes; do
  port=$(free_port)
  if [ "$tls" = yes ]; then
    qemu-nbd -r -f raw -t -e 16 -b 127.0.0.1 -p "$port" -x disk \
      --object "tls-creds-x509,id=tls0,dir=$pki,endpoint=server,verify-peer=off" \
      --tls-creds tls0 "$work/src.raw" &
    uri="nbds://127.0.0.1:$port/disk?tls-certificates=$pki"
    ours_src=("nbds://127.0.0.1:$port/disk" "${tls_uri_args[@]}")
  else
    qemu-nbd -r -f raw -t -e 16 -b 127.0.0.1 -p "$port" -x disk "$work/src.raw" &
    uri="nbd://127.0.0.1:$port/disk"
    ours_src=("nbd://127.0.0.1:$port/disk")
  fi
  pids+=($!)
  wait_port "$port"
  for conns in "${connections[@]}"; do
    row "qemu-nbd" "$tls" "$conns" "$uri" "${ours_src[@]}"
  done
  stop_servers
done
