#!/usr/bin/env bash
# Multi-node GPU training without a scheduler: run this on every node with its own NODE_RANK.
#
#   NODE_RANK=0 NUM_NODES=2 COORDINATOR=10.0.0.1:1234 launch/multinode.sh \
#       --config=configs/hourglass.py:coco --workdir=/shared/runs/hg        # on 10.0.0.1
#   NODE_RANK=1 NUM_NODES=2 COORDINATOR=10.0.0.1:1234 launch/multinode.sh \
#       --config=configs/hourglass.py:coco --workdir=/shared/runs/hg        # on the other
set -euo pipefail

readonly USAGE='Usage: launch/multinode.sh [FLAGS] [-- CONFIG_OVERRIDES...]

Exports the multi-host contract of centernet_jax.main,
  JAX_COORDINATOR_ADDRESS=COORDINATOR  JAX_NUM_PROCESSES=NUM_NODES  JAX_PROCESS_ID=NODE_RANK,
then runs "python3 -m centernet_jax.main --config=CONFIG --workdir=WORKDIR" from the
repository root. Start it on every node (same command, own NODE_RANK); node 0 must be the host
named in COORDINATOR. Each process drives all GPUs of its node. Rerunning the same commands
resumes from the last checkpoint in WORKDIR.

Flags (each also read from the environment variable in capitals, flags win):
  --node_rank=N           this node, 0 .. NUM_NODES-1                               [required]
  --num_nodes=N           number of nodes (one process each)                        [required]
  --coordinator=HOST:PORT address of node 0 and a free port, e.g. 10.0.0.1:1234    [required]
  --config=CONFIG         e.g. configs/hourglass.py:coco                            [required]
  --workdir=DIR           checkpoints and metrics, on storage shared by all nodes   [required]
  --tfds_data_dir=DIR     TFDS data directory (exported as TFDS_DATA_DIR)
  --python=PYTHON         interpreter (default: python3 from the current PATH)
  --dry_run               print every command, one per line, and run nothing (DRY_RUN=1)
  -h, --help              show this text

Arguments after --, and any --config.KEY=VALUE flag, are passed to centernet_jax.main.'

readonly SCRIPT_NAME=multinode.sh HELP_COMMAND="launch/multinode.sh --help"
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NODE_RANK=${NODE_RANK:-}
NUM_NODES=${NUM_NODES:-}
COORDINATOR=${COORDINATOR:-}
CONFIG=${CONFIG:-}
WORKDIR=${WORKDIR:-}
TFDS_DATA_DIR=${TFDS_DATA_DIR:-}
PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
overrides=()

while (($#)); do
  arg=$1
  shift
  case $arg in
    -h | --help) echo "$USAGE"; exit 0 ;;
    --dry_run) DRY_RUN=1 ;;
    --) overrides+=("$@"); break ;;
    --config.*) overrides+=("$arg") ;;
    --*=*)
      value=${arg#*=}
      case ${arg%%=*} in
        --node_rank) NODE_RANK=$value ;;
        --num_nodes) NUM_NODES=$value ;;
        --coordinator) COORDINATOR=$value ;;
        --config) CONFIG=$value ;;
        --workdir) WORKDIR=$value ;;
        --tfds_data_dir) TFDS_DATA_DIR=$value ;;
        --python) PYTHON=$value ;;
        *) die "unknown flag ${arg%%=*}" ;;
      esac
      ;;
    *) die "unexpected argument $arg (flags take their value as --flag=value)" ;;
  esac
done

[[ -n $NUM_NODES ]] || die "NUM_NODES is not set (--num_nodes=N)"
[[ -n $NODE_RANK ]] || die "NODE_RANK is not set (--node_rank=N, 0 on the coordinator)"
[[ -n $COORDINATOR ]] || die "COORDINATOR is not set (--coordinator=HOST:PORT of node 0)"
[[ -n $CONFIG ]] || die "CONFIG is not set (--config=configs/hourglass.py:coco, for example)"
[[ -n $WORKDIR ]] || die "WORKDIR is not set (--workdir=DIR on storage shared by all nodes)"
[[ $NUM_NODES =~ ^[1-9][0-9]*$ ]] || die "NUM_NODES must be a positive integer, not '$NUM_NODES'"
if ! [[ $NODE_RANK =~ ^(0|[1-9][0-9]*)$ ]] || ((NODE_RANK >= NUM_NODES)); then
  die "NODE_RANK must be an integer in [0, $NUM_NODES), not '$NODE_RANK'"
fi
[[ $COORDINATOR =~ ^[^:[:space:]]+:[0-9]+$ ]] ||
  die "COORDINATOR must be HOST:PORT, not '$COORDINATOR'"

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
announce cd "$repo_dir"
[[ $DRY_RUN == 1 ]] || cd "$repo_dir"
export_var JAX_COORDINATOR_ADDRESS "$COORDINATOR"
export_var JAX_NUM_PROCESSES "$NUM_NODES"
export_var JAX_PROCESS_ID "$NODE_RANK"
[[ -z $TFDS_DATA_DIR ]] || export_var TFDS_DATA_DIR "$TFDS_DATA_DIR"

main=("$PYTHON" -m centernet_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
  ${overrides[@]+"${overrides[@]}"})
announce "${main[@]}"
[[ $DRY_RUN == 1 ]] || exec "${main[@]}"
