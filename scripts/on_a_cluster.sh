#!/usr/bin/env bash
# trajemb on a cluster: a Ray cluster for `prepare --engine ray` and embedding, torchrun for training.
#
# Every node needs the same checkout and virtual environment at the same path, made with
#   python3 -m venv .venv && .venv/bin/pip install -r requirements.txt -e ".[ray]"
# and the data (AV2 folders, tables, checkpoints, run folders) on a shared filesystem at the same
# path. Ray runs with token authentication: `ray-head` creates ~/.ray/auth_token; copy that file to
# every other node (same path) or export RAY_AUTH_TOKEN=<its content> there before `ray-worker`.
#
#   scripts/on_a_cluster.sh ray-head                                  # on the head node
#   scripts/on_a_cluster.sh ray-worker HEAD_IP                        # on every other node
#   scripts/on_a_cluster.sh prepare HEAD_IP OUT.parquet AV2_DIR... [-- trajemb prepare flags]
#   scripts/on_a_cluster.sh embed HEAD_IP TABLE CHECKPOINT OUT.npy    # (N, D) float32, table row order
#   scripts/on_a_cluster.sh train NNODES NPROC HEAD_IP TABLE OUT [trajemb train flags]   # on every node
#   scripts/on_a_cluster.sh ray-stop                                  # on every node
#
# Ports: RAY_PORT (default 6379) for Ray, RDZV_PORT (default 29400) for torchrun's rendezvous;
# RDZV_TIMEOUT (default 300 s): how long a worker node waits for the head's rendezvous.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=.venv/bin
ray_port="${RAY_PORT:-6379}"
rdzv_port="${RDZV_PORT:-29400}"
export RAY_AUTH_MODE=token

usage() { grep '^#   scripts/' "$0" | cut -c3- >&2; exit 2; }
[ $# -ge 1 ] || usage
cmd=$1
shift

case "$cmd" in
  ray-head)
    "$bin/ray" get-auth-token --generate >/dev/null
    "$bin/ray" start --head --port "$ray_port" --include-dashboard false "$@"
    ;;
  ray-worker)
    [ $# -ge 1 ] || usage
    head=$1
    shift
    "$bin/ray" start --address "$head:$ray_port" "$@"
    ;;
  prepare)
    [ $# -ge 3 ] || usage
    head=$1 out=$2
    shift 2
    inputs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do inputs+=(--av2 "$1"); shift; done
    [ $# -gt 0 ] && shift  # the "--"
    "$bin/trajemb" prepare "${inputs[@]}" --out "$out" --engine ray --ray-address "$head:$ray_port" "$@"
    ;;
  embed)
    [ $# -eq 4 ] || usage
    "$bin/python" - "$@" "$ray_port" <<'PY'
import sys
from pathlib import Path

import numpy as np

from trajemb.training.ray_embed import embed_table_on_ray

head, table, checkpoint, out, port = sys.argv[1:]
embeddings = embed_table_on_ray(Path(table), Path(checkpoint), address=f"{head}:{port}")
np.save(out, embeddings)
print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} embeddings to {out}")
PY
    ;;
  train)
    [ $# -ge 5 ] || usage
    nnodes=$1 nproc=$2 head=$3 table=$4 out=$5
    shift 5
    # On a worker node, wait (RDZV_TIMEOUT seconds at most, default 300) for the head's rendezvous
    # store and check that it is one: torchrun would wait for ever at a port that is something else.
    "$bin/python" - "$head" "$rdzv_port" "${RDZV_TIMEOUT:-300}" <<'PY'
import socket
import sys

from trajemb.training.distributed import wait_for_rendezvous
from trajemb.core.errors import ConfigError

head, port, timeout_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    with socket.socket() as s:
        s.bind((socket.gethostbyname(head), 0))  # the head's address is one of this machine's
    sys.exit(0)  # this is the head: its torchrun starts the store
except OSError:
    pass
try:
    wait_for_rendezvous(head, port, timeout_s)
except ConfigError as exc:
    sys.exit(f"on_a_cluster.sh: error: {exc}")
PY
    "$bin/torchrun" --nnodes "$nnodes" --nproc-per-node "$nproc" --rdzv-backend c10d \
      --rdzv-endpoint "$head:$rdzv_port" --rdzv-id trajemb-train \
      -m trajemb train --data "$table" --out "$out" "$@"
    ;;
  ray-stop)
    "$bin/ray" stop
    ;;
  *)
    usage
    ;;
esac
