#!/usr/bin/env bash
# Creates a Cloud TPU VM (or queued resource), installs centernet_jax on every worker, runs
# the same training command on all of them, follows the log of worker 0, and tears it down.
# Run `launch/tpu_pod.sh --help` for usage; `--dry_run` prints the commands instead.
set -euo pipefail

readonly USAGE='Usage: launch/tpu_pod.sh [FLAGS] COMMAND [-- CONFIG_OVERRIDES...]

Commands:
  create    create the TPU VM, or with --queued a queued resource (waits until ACTIVE)
  install   copy this repository (or git clone --repo_url) to every worker and install
            the requirements and jax[tpu] into a Python 3.11 virtual environment there
  run       start python -m centernet_jax.main on every worker (detached, under nohup)
            and follow the log of worker 0 (Ctrl-C stops following, not training)
  logs      follow the log of worker 0
  stop      stop the training process on every worker
  delete    delete the TPU VM (or the queued resource and its node)
  up        create, install and run

Flags (each also read from the environment variable in capitals, flags win):
  --name=NAME             TPU VM (node) name                                  [required]
  --zone=ZONE             e.g. us-central2-b                                  [required]
  --project=PROJECT       Google Cloud project (default: the gcloud default project)
  --accelerator=TYPE      e.g. v4-32, v5p-64, v6e-16               [required for create]
  --runtime=VERSION       TPU software version (default: from the accelerator type:
                          v6e v2-alpha-tpuv6e, v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite,
                          otherwise tpu-ubuntu2204-base)
  --queued                use a queued resource (QUEUED=1)
  --qr_id=ID              queued resource id (QR_ID, default: NAME-qr)
  --provisioning=MODE     queued resources only: spot, reserved or best-effort
  --bucket=BUCKET         GCS bucket name, without gs://; sets the defaults below
  --config=CONFIG         e.g. configs/hourglass.py:coco                   [required for run]
  --workdir=DIR           checkpoints and metrics (default: gs://BUCKET/centernet_jax/NAME)
  --tfds_data_dir=DIR     TFDS data (default: gs://BUCKET/tensorflow_datasets)
  --repo_url=URL          install by git clone on the workers instead of copying this checkout
  --repo_ref=REF          branch or tag for --repo_url (default: the remote default branch)
  --python_version=V      Python of the workers virtual environment (default: 3.11)
  --no_follow             run: do not follow the log after starting (FOLLOW=0)
  --dry_run               print every command, one per line, and run nothing (DRY_RUN=1)
  -h, --help              show this text

Arguments after --, and any --config.KEY=VALUE flag, are passed to centernet_jax.main.

Example:
  launch/tpu_pod.sh --name=my-tpu --zone=us-central2-b --accelerator=v4-32 \
      --bucket=my-bucket --config=configs/hourglass.py:coco up -- --config.train.batch_size=128
  launch/tpu_pod.sh --name=my-tpu --zone=us-central2-b delete'

# Where the repository lives on every worker, relative to the home directory.
readonly REMOTE_DIR=centernet_jax
readonly REMOTE_PYTHON=.venv/bin/python
readonly REMOTE_LOG=run.log
readonly REMOTE_PID=run.pid
readonly POLL_SECONDS=30

readonly SCRIPT_NAME=tpu_pod.sh HELP_COMMAND="launch/tpu_pod.sh --help"
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

default_runtime() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    *) echo tpu-ubuntu2204-base ;;
  esac
}

# -- Settings: environment first, flags override. ------------------------------------------
NAME=${NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCELERATOR=${ACCELERATOR:-}
RUNTIME=${RUNTIME:-}
QUEUED=${QUEUED:-0}
QR_ID=${QR_ID:-}
PROVISIONING=${PROVISIONING:-}
BUCKET=${BUCKET:-}
CONFIG=${CONFIG:-}
WORKDIR=${WORKDIR:-}
TFDS_DATA_DIR=${TFDS_DATA_DIR:-}
REPO_URL=${REPO_URL:-}
REPO_REF=${REPO_REF:-}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
FOLLOW=${FOLLOW:-1}
DRY_RUN=${DRY_RUN:-0}
command=""
overrides=()

while (($#)); do
  arg=$1
  shift
  case $arg in
    -h | --help) echo "$USAGE"; exit 0 ;;
    --dry_run) DRY_RUN=1 ;;
    --queued) QUEUED=1 ;;
    --no_follow) FOLLOW=0 ;;
    --) overrides+=("$@"); break ;;
    --config.*) overrides+=("$arg") ;;
    --*=*)
      value=${arg#*=}
      case ${arg%%=*} in
        --name) NAME=$value ;;
        --zone) ZONE=$value ;;
        --project) PROJECT=$value ;;
        --accelerator) ACCELERATOR=$value ;;
        --runtime) RUNTIME=$value ;;
        --qr_id) QR_ID=$value ;;
        --provisioning) PROVISIONING=$value ;;
        --bucket) BUCKET=$value ;;
        --config) CONFIG=$value ;;
        --workdir) WORKDIR=$value ;;
        --tfds_data_dir) TFDS_DATA_DIR=$value ;;
        --repo_url) REPO_URL=$value ;;
        --repo_ref) REPO_REF=$value ;;
        --python_version) PYTHON_VERSION=$value ;;
        *) die "unknown flag ${arg%%=*}" ;;
      esac
      ;;
    -*) die "unknown flag $arg (flags take their value as --flag=value)" ;;
    *)
      [[ -z $command ]] || die "more than one command: $command and $arg"
      command=$arg
      ;;
  esac
done

[[ -n $command ]] || die "no command given (create, install, run, logs, stop, delete or up)"
[[ -n $NAME ]] || die "NAME is not set (--name=NAME)"
[[ -n $ZONE ]] || die "ZONE is not set (--zone=ZONE)"
QR_ID=${QR_ID:-$NAME-qr}
BUCKET=${BUCKET#gs://}
BUCKET=${BUCKET%/}
if [[ -n $BUCKET ]]; then
  WORKDIR=${WORKDIR:-gs://$BUCKET/centernet_jax/$NAME}
  TFDS_DATA_DIR=${TFDS_DATA_DIR:-gs://$BUCKET/tensorflow_datasets}
fi

gcloud_flags=(--zone "$ZONE")
[[ -z $PROJECT ]] || gcloud_flags+=(--project "$PROJECT")
readonly TPU_VM=(gcloud compute tpus tpu-vm)
readonly QUEUED_RESOURCES=(gcloud compute tpus queued-resources)

on_all_workers() {
  run "${TPU_VM[@]}" ssh "$NAME" "${gcloud_flags[@]}" --worker=all --command "$1"
}

# -- Commands. -------------------------------------------------------------------------------
create() {
  [[ -n $ACCELERATOR ]] || die "ACCELERATOR is not set (--accelerator=v4-32, for example)"
  RUNTIME=${RUNTIME:-$(default_runtime "$ACCELERATOR")}
  if [[ $QUEUED != 1 ]]; then
    [[ -z $PROVISIONING ]] || die "--provisioning applies to queued resources (add --queued)"
    run "${TPU_VM[@]}" create "$NAME" "${gcloud_flags[@]}" --accelerator-type "$ACCELERATOR" \
      --version "$RUNTIME"
    return
  fi
  local provisioning_flags=()
  case $PROVISIONING in
    "") ;;
    spot | reserved | best-effort) provisioning_flags=("--$PROVISIONING") ;;
    *) die "PROVISIONING must be spot, reserved or best-effort, not '$PROVISIONING'" ;;
  esac
  run "${QUEUED_RESOURCES[@]}" create "$QR_ID" --node-id "$NAME" "${gcloud_flags[@]}" \
    --accelerator-type "$ACCELERATOR" --runtime-version "$RUNTIME" \
    ${provisioning_flags[@]+"${provisioning_flags[@]}"}
  wait_until_active
}

wait_until_active() {
  local describe=("${QUEUED_RESOURCES[@]}" describe "$QR_ID" "${gcloud_flags[@]}"
    --format 'value(state.state)')
  if [[ $DRY_RUN == 1 ]]; then
    shell_quote "${describe[@]}"
    echo "# (repeated every ${POLL_SECONDS} s until the state is ACTIVE)"
    return
  fi
  local state
  while true; do
    state=$("${describe[@]}")
    echo "queued resource $QR_ID: $state" >&2
    case $state in
      ACTIVE) return ;;
      FAILED | SUSPENDED | SUSPENDING | DELETING)
        echo "tpu_pod.sh: queued resource $QR_ID is $state; see" \
          "gcloud compute tpus queued-resources describe $QR_ID --zone $ZONE" >&2
        exit 1
        ;;
    esac
    sleep "$POLL_SECONDS"
  done
}

install() {
  if [[ -n $REPO_URL ]]; then
    local clone=(git clone --depth 1)
    [[ -z $REPO_REF ]] || clone+=(--branch "$REPO_REF")
    clone+=("$REPO_URL" "$REMOTE_DIR")
    on_all_workers "if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR pull --ff-only;\
 else $(shell_quote "${clone[@]}"); fi"
  else
    # Only what training needs: the package, the configs and the requirements.
    local repo_root
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    on_all_workers "mkdir -p $REMOTE_DIR"
    run "${TPU_VM[@]}" scp "$repo_root/centernet_jax" "$repo_root/configs" \
      "$repo_root/requirements.txt" "$NAME:$REMOTE_DIR" "${gcloud_flags[@]}" --worker=all --recurse
  fi
  # TPU runtime images ship Python 3.10; uv provides the Python the requirements need.
  on_all_workers "python3 -m pip install --user --upgrade uv && cd $REMOTE_DIR\
 && ~/.local/bin/uv venv --allow-existing --python $PYTHON_VERSION .venv\
 && ~/.local/bin/uv pip install --python $REMOTE_PYTHON -r requirements.txt \"jax[tpu]\""
}

train_command() {
  [[ -n $CONFIG ]] || die "CONFIG is not set (--config=configs/hourglass.py:coco, for example)"
  [[ -n $WORKDIR ]] || die "WORKDIR is not set (--workdir=gs://BUCKET/DIR, or --bucket=BUCKET)"
  local main=("$REMOTE_PYTHON" -m centernet_jax.main "--config=$CONFIG" "--workdir=$WORKDIR"
    ${overrides[@]+"${overrides[@]}"})
  local env=""
  [[ -z $TFDS_DATA_DIR ]] || env="export $(shell_quote "TFDS_DATA_DIR=$TFDS_DATA_DIR"); "
  # One detached process per worker; the pid file refuses a second start on busy TPUs.
  # $! and $(...) are escaped: they expand on the worker.
  printf '%s' "cd $REMOTE_DIR || exit 1; if [ -f $REMOTE_PID ] && kill -0 \"\$(cat $REMOTE_PID)\"\
 2>/dev/null; then echo \"training already runs on \$(hostname); stop it first\" >&2; exit 1; fi;\
 ${env}nohup $(shell_quote "${main[@]}") > $REMOTE_LOG 2>&1 < /dev/null & echo \$! > $REMOTE_PID"
}

start() {
  local remote
  remote=$(train_command)
  on_all_workers "$remote"
  [[ $FOLLOW != 1 ]] || logs
}

logs() {
  run "${TPU_VM[@]}" ssh "$NAME" "${gcloud_flags[@]}" --worker=0 \
    --command "tail -n +1 -F $REMOTE_DIR/$REMOTE_LOG"
}

stop() {
  on_all_workers "if [ -f $REMOTE_DIR/$REMOTE_PID ]; then kill \"\$(cat $REMOTE_DIR/$REMOTE_PID)\"\
 2>/dev/null || true; rm -f $REMOTE_DIR/$REMOTE_PID; fi"
}

delete() {
  if [[ $QUEUED == 1 ]]; then
    # --force also deletes the node the queued resource created.
    run "${QUEUED_RESOURCES[@]}" delete "$QR_ID" "${gcloud_flags[@]}" --force --async --quiet
  else
    run "${TPU_VM[@]}" delete "$NAME" "${gcloud_flags[@]}" --quiet
  fi
}

case $command in
  create) create ;;
  install) install ;;
  run) start ;;
  logs) logs ;;
  stop) stop ;;
  delete) delete ;;
  up)
    train_command > /dev/null  # check the run settings before paying for a TPU
    create
    install
    start
    ;;
  *) die "unknown command '$command' (create, install, run, logs, stop, delete or up)" ;;
esac
