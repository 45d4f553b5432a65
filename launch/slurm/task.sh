# One rank's environment, then its command: `srun ... bash task.sh weft train ...` (see
# common.sh). Run once per task, so it sees the task's own SLURM_LOCALID.
#
# OpenBLAS threads (WEFT_NUM_THREADS, which weft reads first, and OPENBLAS_NUM_THREADS): kept
# when WEFT_NUM_THREADS is set, else SLURM_CPUS_PER_TASK (sbatch --cpus-per-task), else this
# node's CPUs divided among its tasks (SLURM_CPUS_ON_NODE / SLURM_NTASKS_PER_NODE, or this
# node's entry of SLURM_STEP_TASKS_PER_NODE), else, started by mpirun rather than srun, the
# cores divided among OMPI_COMM_WORLD_LOCAL_SIZE. Never below 1.
#
# GPU: where GPUs are present (CUDA_VISIBLE_DEVICES set by Slurm's gres, or nvidia-smi lists
# some), each task keeps one of them: entry SLURM_LOCALID (OMPI_COMM_WORLD_LOCAL_RANK under
# mpirun), modulo their count, of CUDA_VISIBLE_DEVICES (else of 0..count-1). WEFT_GPU_BIND=none
# keeps CUDA_VISIBLE_DEVICES as it is.

# weft_tasks_on_node: the number of tasks on this node: SLURM_NTASKS_PER_NODE, else entry
# SLURM_NODEID of a Slurm tasks-per-node list such as "4(x2),3".
weft_tasks_on_node() {
  if [ -n "${SLURM_NTASKS_PER_NODE:-}" ]; then
    echo "${SLURM_NTASKS_PER_NODE%%,*}"
    return
  fi
  local list="${SLURM_STEP_TASKS_PER_NODE:-${SLURM_TASKS_PER_NODE:-}}" node="${SLURM_NODEID:-0}"
  [ -n "$list" ] || return 1
  local entry count repeat
  IFS=, read -ra entries <<<"$list"
  for entry in "${entries[@]}"; do
    count="${entry%%(*}"
    repeat=1
    [[ "$entry" =~ \(x([0-9]+)\) ]] && repeat="${BASH_REMATCH[1]}"
    if [ "$node" -lt "$repeat" ]; then
      echo "$count"
      return
    fi
    node=$((node - repeat))
  done
  return 1
}

weft_task_threads() {
  local tasks
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    echo "$SLURM_CPUS_PER_TASK"
  elif [ -n "${SLURM_CPUS_ON_NODE:-}" ] && tasks=$(weft_tasks_on_node); then
    echo $((SLURM_CPUS_ON_NODE / tasks))
  elif [ -n "${OMPI_COMM_WORLD_LOCAL_SIZE:-}" ]; then
    echo $(($(nproc) / OMPI_COMM_WORLD_LOCAL_SIZE))
  else
    nproc
  fi
}

if [ -z "${WEFT_NUM_THREADS:-}" ]; then
  WEFT_NUM_THREADS=$(weft_task_threads)
  [ "$WEFT_NUM_THREADS" -ge 1 ] 2>/dev/null || WEFT_NUM_THREADS=1
fi
export WEFT_NUM_THREADS OPENBLAS_NUM_THREADS="$WEFT_NUM_THREADS"

# Open MPI's variable first: under mpirun every rank inherits the batch shell's SLURM_LOCALID 0
# (srun's direct launch sets SLURM_LOCALID, and Open MPI's variables only inside MPI_Init).
local_rank="${OMPI_COMM_WORLD_LOCAL_RANK:-${SLURM_LOCALID:-0}}"
gpu="none"
if [ "${WEFT_GPU_BIND:-local}" != none ]; then
  gpus=()
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && [ "$CUDA_VISIBLE_DEVICES" != NoDevFiles ]; then
    IFS=, read -ra gpus <<<"$CUDA_VISIBLE_DEVICES"
  elif command -v nvidia-smi >/dev/null 2>&1; then
    count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    [ "${count:-0}" -gt 0 ] && mapfile -t gpus < <(seq 0 $((count - 1)))
  fi
  if [ ${#gpus[@]} -gt 0 ]; then
    gpu="${gpus[$((local_rank % ${#gpus[@]}))]}"
    export CUDA_VISIBLE_DEVICES="$gpu"
  fi
fi

if [ "$local_rank" = 0 ]; then
  echo "weft-task: $(hostname -s): local rank 0 of $(weft_tasks_on_node || echo "${OMPI_COMM_WORLD_LOCAL_SIZE:-?}"), $WEFT_NUM_THREADS OpenBLAS threads per rank, GPU $gpu" >&2
fi
exec "$@"
