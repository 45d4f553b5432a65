# Sourced by the Slurm job templates beside it (train.sbatch, train_multinode.sbatch,
# serve.sbatch) inside the batch job: how to launch the ranks with srun, where the newest
# checkpoint is, and the requeue that follows a step stopped with exit code 75.

WEFT_SLURM_DIR="$WEFT_ROOT/launch/slurm"
WEFT_BIN="${WEFT_BIN:-$WEFT_ROOT/build/weft}"
# How the ranks start: srun (default) or mpirun (Open MPI's, inside the allocation: it reads
# Slurm's node list and starts its daemons itself, so it needs no PMI plugin).
WEFT_LAUNCHER="${WEFT_LAUNCHER:-srun}"
# srun's --mpi: pmix when this Slurm has the plugin (Debian's slurm-wlm does, and Debian's Open
# MPI 4.1 direct-launched by srun finds its PMIx server there). Only without it pmi2, else none:
# for an MPI built with Slurm's PMI-2 or none. Debian's Open MPI is not, and fails in MPI_Init
# under both ("OMPI was not built with SLURM's PMI support"): on such a Slurm set
# WEFT_LAUNCHER=mpirun. WEFT_SRUN_MPI overrides the choice.
WEFT_SRUN_MPI="${WEFT_SRUN_MPI:-auto}"
# scontrol requeue at most this many times (SLURM_RESTART_COUNT counts them), so that a job
# that keeps being stopped does not loop forever.
WEFT_MAX_REQUEUES="${WEFT_MAX_REQUEUES:-20}"

# Slurm's SIGTERM (time limit, scancel, preemption) goes to the batch shell as well as to the
# ranks. With this trap the shell waits for the job step to end (weft saves and exits 75)
# instead of dying first, so that the requeue below still runs.
trap 'echo "weft: the batch script got SIGTERM (so did the ranks)"' TERM

# weft_srun_mpi: the --mpi plugin to use (see WEFT_SRUN_MPI above), resolved once below.
weft_srun_mpi() {
  if [ "$WEFT_SRUN_MPI" != auto ]; then
    echo "$WEFT_SRUN_MPI"
    return
  fi
  local plugins
  plugins=$(srun --mpi=list 2>&1)
  if grep -qw pmix <<<"$plugins"; then
    echo pmix
  elif grep -qw pmi2 <<<"$plugins"; then
    echo "weft: this Slurm has no pmix plugin: launching with --mpi=pmi2" >&2
    echo pmi2
  else
    echo "weft: this Slurm has neither pmix nor pmi2: launching with --mpi=none" >&2
    echo none
  fi
}

# weft_srun ARGS...: one task per rank of the allocation, each through task.sh (OpenBLAS
# threads and GPU of its local rank), e.g. `weft_srun "$WEFT_BIN" train ...`.
weft_srun() {
  if [ "$WEFT_LAUNCHER" = mpirun ]; then
    local root=()
    [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
    # shellcheck disable=SC2086
    mpirun "${root[@]}" ${WEFT_MPIRUN_FLAGS:-} -np "$SLURM_NTASKS" bash "$WEFT_SLURM_DIR/task.sh" "$@"
  else
    srun --mpi="$WEFT_SRUN_MPI" --distribution=block bash "$WEFT_SLURM_DIR/task.sh" "$@"
  fi
}

if [ "$WEFT_LAUNCHER" = srun ]; then
  WEFT_SRUN_MPI=$(weft_srun_mpi)
fi

weft_launcher_name() {
  if [ "$WEFT_LAUNCHER" = mpirun ]; then echo mpirun; else echo "srun --mpi=$WEFT_SRUN_MPI"; fi
}

# weft_newest_checkpoint DIR: prints the newest complete checkpoint in DIR (a `step-N` folder
# with its manifest; `step-N.tmp` leftovers of an interrupted save do not count), or fails.
weft_newest_checkpoint() {
  local newest=""
  for d in "$1"/step-*; do
    case "$d" in *.tmp) continue ;; esac
    [ -f "$d/manifest.pb" ] && newest="$d"
  done
  [ -n "$newest" ] && echo "$newest"
}

# weft_requeue: puts this job back in the queue (it restarts from the top of the template, and
# the train templates resume from the newest checkpoint) when it was only signalled (still
# RUNNING: --signal, `scancel --signal=...`) or reached its time limit (Reason=TimeLimit). A
# job ending otherwise was cancelled: a plain `scancel` sends SIGTERM too (weft saves and exits
# 75), but means stop. Slurm holds a requeued job for its credential lifetime (AuthInfo
# cred_expire, 120 s by default) before it can start again.
weft_requeue() {
  local restarts="${SLURM_RESTART_COUNT:-0}" info state reason
  info=$(scontrol show job "$SLURM_JOB_ID" -o)
  state=$(grep -o 'JobState=[A-Z_]*' <<<"$info" | cut -d= -f2)
  reason=$(grep -o 'Reason=[^ ]*' <<<"$info" | cut -d= -f2)
  if [ "$state" != RUNNING ] && [ "$reason" != TimeLimit ]; then
    echo "weft: job $SLURM_JOB_ID is ending ($state, reason $reason): cancelled, not requeueing" \
      "(submit again with WEFT_RUN_DIR=${WEFT_RUN_DIR:-} to go on)"
    return 1
  fi
  if [ "$restarts" -ge "$WEFT_MAX_REQUEUES" ]; then
    echo "weft: job $SLURM_JOB_ID already restarted $restarts times (WEFT_MAX_REQUEUES): not requeueing" >&2
    return 1
  fi
  echo "weft: requeueing job $SLURM_JOB_ID (restart $((restarts + 1)); job $state, reason $reason)"
  scontrol requeue "$SLURM_JOB_ID"
}

# weft_slurm_train: the training job of train.sbatch and train_multinode.sbatch. `weft train`
# saves into WEFT_CKPT_DIR and, when a complete checkpoint is there (a requeued or resubmitted
# job), resumes from its newest one with --load. A step that exits 75 was stopped by SIGTERM or
# SIGUSR1 (`#SBATCH --signal=USR1@...`, preemption, `scancel --signal=USR1`) after saving a
# checkpoint: the job requeues itself and the next run goes on from there. One that exits 76
# lost a rank (dead or hung, docs/operations.md "Failure detection"): requeued the same way.
weft_slurm_train() {
  mkdir -p "$WEFT_CKPT_DIR" "$(dirname "$WEFT_METRICS")"
  local load=() newest
  if newest=$(weft_newest_checkpoint "$WEFT_CKPT_DIR"); then
    echo "weft: resuming from $newest (job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0})"
    load=(--load "$WEFT_CKPT_DIR")
    [ "${WEFT_LOAD_FALLBACK:-0}" = 1 ] && load+=(--load-fallback)
  else
    echo "weft: no checkpoint in $WEFT_CKPT_DIR yet: starting at step 0"
  fi
  echo "weft: $SLURM_NTASKS ranks on $SLURM_JOB_NUM_NODES node(s) ($SLURM_JOB_NODELIST), $(weft_launcher_name)"
  local rc=0
  # WEFT_MESH_FLAGS and WEFT_TRAIN_FLAGS are split into words on purpose.
  # shellcheck disable=SC2086
  weft_srun "$WEFT_BIN" train --model "$WEFT_MODEL" --data "$WEFT_DATA" --steps "$WEFT_STEPS" \
    --global-batch "$WEFT_GLOBAL_BATCH" --seq-len "$WEFT_SEQ_LEN" --lr "$WEFT_LR" \
    --weight-decay "$WEFT_WEIGHT_DECAY" --save "$WEFT_CKPT_DIR" --save-every "$WEFT_SAVE_EVERY" \
    --metrics "$WEFT_METRICS" "${load[@]}" $WEFT_MESH_FLAGS $WEFT_TRAIN_FLAGS || rc=$?
  if [ "$rc" -eq 75 ]; then
    echo "weft: the training step exited 75 (stopped after saving a checkpoint)"
    weft_requeue && exit 0
  fi
  if [ "$rc" -eq 76 ]; then
    # A rank died, was stopped or hung (weft's line above names it and its collective; the
    # bound is --comm-timeout or $WEFT_COMM_TIMEOUT): go again from the newest checkpoint,
    # at most WEFT_MAX_REQUEUES times.
    echo "weft: the training step exited 76 (a rank died or hung): requeueing to resume"
    weft_requeue && exit 0
  fi
  [ "$rc" -eq 0 ] && echo "weft: training done: newest checkpoint $(weft_newest_checkpoint "$WEFT_CKPT_DIR")"
  return "$rc"
}
