#!/bin/sh
# Runs N copies of a program as the ranks of one torchrun-style world on this host (RANK,
# WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), for tests of the TCP
# transport without mpirun. Fails when any rank fails; a rank that outlives the limit is killed.
#   run-ranks.sh N PROGRAM [ARGS...]
set -u
n=$1
shift
# A port from the process id, so parallel test runs rarely meet; the rendezvous names it on failure.
port=$((20000 + ($$ * 7) % 40000))
pids=""
for r in $(seq 0 $((n - 1))); do
    RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
        timeout 600 "$@" &
    pids="$pids $!"
done
status=0
r=0
for p in $pids; do
    if ! wait "$p"; then
        echo "run-ranks: rank $r failed" >&2
        status=1
    fi
    r=$((r + 1))
done
exit $status
