#!/usr/bin/env bash
# The Slurm job templates of launch/slurm on a real one-node Slurm cluster started here: Debian's
# slurm-wlm and munge (installed when missing), our own munged, slurmctld and slurmd as root in
# the background, with their config, state, spool, sockets and logs in a temporary folder and
# ports of their own, so that they touch nothing of the machine's. It submits with sbatch:
#   1. train.sbatch (2 ranks, srun --mpi=pmix): COMPLETED, exit 0, every metrics line, the
#      final checkpoint, one OpenBLAS thread per rank (2 CPUs, 2 tasks);
#   2. train_multinode.sbatch on this one node (--nodes=1; the default mesh is tp 2 + SP);
#   3. train.sbatch with WEFT_LAUNCHER=mpirun;
#   4. requeue: train.sbatch signalled with `scancel --signal=USR1` mid-run (what
#      `#SBATCH --signal=USR1@120` sends before the time limit): weft saves a checkpoint and
#      exits 75, the job requeues itself, and its second run resumes from that step to the end
#      (Restarts=1, every metrics step exactly once);
#   5. a plain `scancel` of train.sbatch: weft saves and exits 75, the job is not requeued;
#   6. serve.sbatch on the model exported from job 1: one completion over HTTP, then
#      `scancel --signal=TERM` stops it with exit 0.
# Before the cluster: task.sh's OpenBLAS threads and GPU choice from given Slurm/Open MPI
# variables. Everything is torn down at the end, also on failure or interruption. Exit 77
# (ctest's skip) when the packages cannot be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WEFT="${WEFT_BINARY:-$ROOT/build/weft}"
TASK="$ROOT/launch/slurm/task.sh"
export PATH="$PATH:/usr/sbin:/sbin"
# A test started inside a Slurm job must not hand that job's variables to its own jobs.
for v in $(compgen -e | grep '^SLURM_' || true); do unset "$v"; done

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[ -x "$WEFT" ] || fail "no weft binary at $WEFT (build it first, or set WEFT_BINARY)"

# --- task.sh: threads and GPU of one rank, from the variables Slurm or Open MPI give it ---------
task_env() { env -i PATH="$PATH" "$@" bash "$TASK" env 2>/dev/null; }
expect_env() { # expect_env OUTPUT NAME=VALUE...
  local out="$1"
  shift
  for kv in "$@"; do grep -qx "$kv" <<<"$out" || fail "task.sh: expected $kv in: $(grep -E 'THREADS|CUDA' <<<"$out" | tr '\n' ' ')"; done
}
expect_env "$(task_env SLURM_LOCALID=1 SLURM_CPUS_PER_TASK=3 SLURM_CPUS_ON_NODE=8 \
  SLURM_NTASKS_PER_NODE=2 CUDA_VISIBLE_DEVICES=4,5)" \
  WEFT_NUM_THREADS=3 OPENBLAS_NUM_THREADS=3 CUDA_VISIBLE_DEVICES=5
expect_env "$(task_env SLURM_LOCALID=2 SLURM_NODEID=1 SLURM_CPUS_ON_NODE=12 \
  SLURM_STEP_TASKS_PER_NODE='4,3(x2)' CUDA_VISIBLE_DEVICES=0,1,2,3)" \
  WEFT_NUM_THREADS=4 CUDA_VISIBLE_DEVICES=2
expect_env "$(task_env SLURM_LOCALID=5 SLURM_CPUS_ON_NODE=16 SLURM_NTASKS_PER_NODE=8 \
  CUDA_VISIBLE_DEVICES=0,1,2,3)" WEFT_NUM_THREADS=2 CUDA_VISIBLE_DEVICES=1
expect_env "$(task_env SLURM_LOCALID=0 OMPI_COMM_WORLD_LOCAL_SIZE=2 OMPI_COMM_WORLD_LOCAL_RANK=1 \
  CUDA_VISIBLE_DEVICES=6,7)" "WEFT_NUM_THREADS=$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))" \
  CUDA_VISIBLE_DEVICES=7
expect_env "$(task_env WEFT_NUM_THREADS=5 SLURM_CPUS_PER_TASK=3 SLURM_LOCALID=1 \
  CUDA_VISIBLE_DEVICES=4,5 WEFT_GPU_BIND=none)" WEFT_NUM_THREADS=5 OPENBLAS_NUM_THREADS=5 \
  CUDA_VISIBLE_DEVICES=4,5
expect_env "$(task_env SLURM_LOCALID=0 SLURM_CPUS_ON_NODE=1 SLURM_NTASKS_PER_NODE=4)" \
  WEFT_NUM_THREADS=1
echo "task.sh: threads and GPU per rank as expected"

# --- packages ---------------------------------------------------------------------------------
have_slurm() {
  for c in slurmctld slurmd sbatch srun scontrol sinfo squeue scancel munged munge; do
    command -v "$c" >/dev/null 2>&1 || return 1
  done
}
if ! have_slurm; then
  echo "installing Debian's slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1; } || true
fi
if ! have_slurm; then
  echo "SKIP: Slurm (slurm-wlm) and munge are not installed and could not be installed with apt-get"
  exit 77
fi
[ "$(id -u)" -eq 0 ] || { echo "SKIP: starting slurmd needs root"; exit 77; }

# --- the cluster: one node, 2 CPUs --------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/weft-slurm.XXXXXX")"
NODE="$(hostname -s)"
MUNGED_PID="" CTLD_PID="" SLURMD_PID="" OK=0
CONF="$WORK/slurm.conf"
export SLURM_CONF="$CONF"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for _ in $(seq 50); do
  CTLD_PORT=$((20000 + RANDOM % 20000))
  port_free "$CTLD_PORT" && port_free $((CTLD_PORT + 1)) && break
done

# cluster_pids: every process this cluster started (the daemons, slurmstepd, job scripts, srun,
# weft): those whose environment, fixed when they were started, holds our SLURM_CONF.
cluster_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" != $$ ] && tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF "SLURM_CONF=$CONF" &&
      echo "${p#/proc/}"
  done
  return 0
}

teardown() {
  set +e
  if [ -n "$CTLD_PID" ]; then
    # No job may start again (a requeued one), then cancel them all, at last with SIGKILL.
    scontrol update PartitionName=weft State=DOWN 2>/dev/null
    for i in $(seq 40); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      if [ $((i % 10)) = 1 ]; then scancel --quiet --partition=weft; fi
      [ "$i" = 30 ] && scancel --quiet --full --signal=KILL --partition=weft
      sleep 0.5
    done
  fi
  for pid in $SLURMD_PID $CTLD_PID $MUNGED_PID; do kill "$pid" 2>/dev/null; done
  for pid in $SLURMD_PID $CTLD_PID $MUNGED_PID; do wait "$pid" 2>/dev/null; done
  export -n SLURM_CONF # so that the commands below do not count as the cluster's
  local left=()
  mapfile -t left < <(cluster_pids)
  if [ ${#left[@]} -gt 0 ]; then
    echo "teardown: killing what the cluster left running: ${left[*]}"
    kill -KILL "${left[@]}" 2>/dev/null
  fi
  if [ "$OK" = 1 ]; then
    rm -rf "$WORK"
  else
    for f in "$WORK"/log/slurmctld.log "$WORK"/log/slurmd.log "$WORK"/*.out; do
      [ -f "$f" ] && { echo "===== $f (last 40 lines)"; tail -n 40 "$f"; }
    done
    echo "kept $WORK"
  fi
}
trap teardown EXIT
trap 'exit 1' INT TERM

mkdir -p "$WORK"/{munge,state,spool,log,tmp}
chmod 700 "$WORK/munge"
mkdir -m 755 "$WORK/munge/socket"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"
SOCKET="$WORK/munge/socket/munge.socket"
munged --foreground --force --key-file="$WORK/munge/munge.key" --socket="$SOCKET" \
  --pid-file="$WORK/munge/munged.pid" --seed-file="$WORK/munge/munged.seed" \
  --log-file="$WORK/log/munged.log" >"$WORK/log/munged.out" 2>&1 &
MUNGED_PID=$!
for _ in $(seq 50); do
  munge -n -S "$SOCKET" 2>/dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1 && break
  sleep 0.2
done
munge -n -S "$SOCKET" | unmunge -S "$SOCKET" >/dev/null || fail "munged did not start ($WORK/log)"

MPI_DEFAULT=none
if compgen -G "/usr/lib/*/slurm*/mpi_pmix*.so" >/dev/null; then MPI_DEFAULT=pmix; fi
# cred_expire=5: a requeued job may start again 6 s later (120 s by default); sched_interval=1:
# the scheduler looks at the queue every second (60 s by default).
cat >"$CONF" <<EOF
ClusterName=weft-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=5
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
TmpFS=$WORK/tmp
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=$MPI_DEFAULT
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=weft Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >"$WORK/log/slurmctld.out" 2>&1 &
CTLD_PID=$!
slurmd -D -f "$SLURM_CONF" -N "$NODE" >"$WORK/log/slurmd.out" 2>&1 &
SLURMD_PID=$!
state=""
for _ in $(seq 120); do
  state="$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)"
  [ "$state" = idle ] && break
  sleep 0.5
done
[ "$state" = idle ] || fail "node $NODE is '$state', not idle, after 60 s"
echo "cluster up: node $NODE idle, slurmctld on port $CTLD_PORT, MpiDefault=$MPI_DEFAULT"

# --- jobs ---------------------------------------------------------------------------------------
field() { scontrol show job -o "$1" | grep -o "$2=[^ ]*" | cut -d= -f2; }
ended() { # ended STATE: whether a job in STATE has ended
  case "$1" in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | \
      PREEMPTED) return 0 ;;
  esac
  return 1
}
wait_job() { # wait_job ID [SECONDS]: until the job ends; prints its state
  local s=""
  for _ in $(seq $((${2:-240} * 2))); do
    s="$(field "$1" JobState)"
    ended "$s" && break
    sleep 0.5
  done
  echo "$s"
}
expect_completed() { # expect_completed ID NAME
  local s
  s="$(wait_job "$1")"
  [ "$s" = COMPLETED ] && [ "$(field "$1" ExitCode)" = 0:0 ] ||
    fail "$2 (job $1): state $s, exit code $(field "$1" ExitCode); see $WORK/$2.out"
}
expect_log() { # expect_log NAME TEXT...
  local f="$WORK/$1.out"
  shift
  for t in "$@"; do grep -qF -- "$t" "$f" || fail "$f has no line with '$t'"; done
}
expect_metrics() { # expect_metrics FILE STEPS: steps 1..STEPS, each exactly once
  local got
  got="$(grep -o '"step":[0-9]*' "$1" | cut -d: -f2 | sort -n | uniq | paste -sd' ')"
  [ "$got" = "$(seq -s' ' "$2")" ] && [ "$(wc -l <"$1")" -eq "$2" ] ||
    fail "$1: expected steps 1..$2 once each, got $(wc -l <"$1") lines"
}
submit() { # submit NAME TEMPLATE [sbatch args] (settings from the environment)
  local name="$1" template="$2"
  shift 2
  sbatch --parsable --output="$WORK/$name.out" "$@" "$ROOT/launch/slurm/$template"
}

mkdir -p "$WORK/model"
cat >"$WORK/model/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "max_position_embeddings": 64,
 "tie_word_embeddings": true}
JSON
awk 'BEGIN { srand(7); for (i = 0; i < 64; i++) { x = int(rand() * 64); d = 1 + int(rand() * 3);
  line = x; for (t = 1; t < 32; t++) { x = (x + d) % 64; line = line " " x } print line } }' \
  >"$WORK/tokens.txt"
export WEFT_BIN="$WEFT" WEFT_MODEL="$WORK/model" WEFT_DATA="$WORK/tokens.txt" \
  WEFT_GLOBAL_BATCH=8 WEFT_SEQ_LEN=32 WEFT_LR=1e-2 WEFT_WEIGHT_DECAY=0.01 \
  WEFT_TRAIN_FLAGS="--init-random --seed 1 --log-every 10"

START=$SECONDS
TRAIN=$(WEFT_STEPS=40 WEFT_SAVE_EVERY=20 WEFT_RUN_DIR="$WORK/train" submit train train.sbatch)
MULTI=$(WEFT_STEPS=10 WEFT_RUN_DIR="$WORK/multi" submit multi train_multinode.sbatch --nodes=1)
MPIRUN=$(WEFT_STEPS=10 WEFT_RUN_DIR="$WORK/mpirun" WEFT_LAUNCHER=mpirun submit mpirun train.sbatch)

expect_completed "$TRAIN" train
expect_log train "no checkpoint in $WORK/train/ckpt yet: starting at step 0" \
  "2 ranks on 1 node(s)" "srun --mpi=$MPI_DEFAULT" \
  "weft-task: $NODE: local rank 0 of 2, 1 OpenBLAS threads per rank, GPU none" \
  "step 40/40" "training done: newest checkpoint $WORK/train/ckpt/step-00000040"
expect_metrics "$WORK/train/metrics.jsonl" 40
[ -f "$WORK/train/ckpt/step-00000040/manifest.pb" ] || fail "no checkpoint step-00000040"
"$WEFT" ckpt verify --from "$WORK/train/ckpt" >/dev/null || fail "ckpt verify of job $TRAIN's checkpoint"
echo "train.sbatch: job $TRAIN COMPLETED, 40 steps, checkpoint step 40"

expect_completed "$MULTI" multi
expect_log multi "weft: nodes $NODE" "2 ranks on 1 node(s)" "step 10/10" "training done"
expect_metrics "$WORK/multi/metrics.jsonl" 10
echo "train_multinode.sbatch (--nodes=1, tp 2 + SP): job $MULTI COMPLETED"

expect_completed "$MPIRUN" mpirun
expect_log mpirun ", mpirun" "step 10/10" "training done" \
  "weft-task: $NODE: local rank 0 of 2, 1 OpenBLAS threads per rank, GPU none"
[ "$(grep -c weft-task: "$WORK/mpirun.out")" = 1 ] || fail "mpirun: not one local rank 0 in $WORK/mpirun.out"
expect_metrics "$WORK/mpirun/metrics.jsonl" 10
echo "train.sbatch with WEFT_LAUNCHER=mpirun: job $MPIRUN COMPLETED"

# Requeue: enough steps (about 4 ms each here, 2 ranks of 16 sequences) that the signal lands
# mid-run: it is sent once the run has written 20 steps, and takes about a second.
STEPS=5000
requeue_env=("WEFT_STEPS=$STEPS" WEFT_GLOBAL_BATCH=32 WEFT_SAVE_EVERY=100000
  WEFT_TRAIN_FLAGS="--init-random --seed 1 --log-every 1000")
lines() { wc -l 2>/dev/null <"$WORK/$1/metrics.jsonl" || echo 0; }
wait_lines() { # wait_lines NAME N: until the job's metrics file has N lines
  for _ in $(seq 2400); do
    [ "$(lines "$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  fail "$1: the metrics file never reached $2 lines"
}
stopped_at() { # stopped_at NAME SIGNAL: the step weft stopped after (waits for the line)
  local step=""
  for _ in $(seq 1200); do
    step="$(grep -o "stopped by $2 after step [0-9]*" "$WORK/$1.out" | grep -o '[0-9]*$' || true)"
    [ -n "$step" ] && break
    sleep 0.05
  done
  [ -n "$step" ] || fail "job $1 was not stopped by $2 (did it finish before the signal?)"
  echo "$step"
}
ckpt_of() { echo "$WORK/$1/ckpt/step-$(printf %08d "$2")"; }
REQ=$(export "${requeue_env[@]}" WEFT_RUN_DIR="$WORK/requeue" && submit requeue train.sbatch)
wait_lines requeue 20
# SIGUSR1 to the ranks only, as `#SBATCH --signal=USR1@120` sends before the time limit.
scancel --signal=USR1 "$REQ"
expect_completed "$REQ" requeue
stop="$(stopped_at requeue SIGUSR1)"
[ "$stop" -lt "$STEPS" ] || fail "job $REQ stopped at step $stop"
expect_log requeue "checkpoint saved in $(ckpt_of requeue "$stop")" "the training step exited 75" \
  "requeueing job $REQ (restart 1; job RUNNING, reason None)" \
  "resuming from $(ckpt_of requeue "$stop") (job $REQ, restart 1)" \
  "resumed from $(ckpt_of requeue "$stop") at step $stop" "saved checkpoint step $STEPS" \
  "training done: newest checkpoint $(ckpt_of requeue $STEPS)"
[ "$(field "$REQ" Restarts)" = 1 ] || fail "job $REQ: Restarts=$(field "$REQ" Restarts), expected 1"
expect_metrics "$WORK/requeue/metrics.jsonl" "$STEPS"
echo "requeue: job $REQ stopped by SIGUSR1 after step $stop (exit 75), requeued, resumed at" \
  "step $stop, done at step $STEPS"

# A plain scancel sends SIGTERM to the batch shell and the ranks, as the time limit does: weft
# saves and exits 75, the shell (its TERM trap) lives on to decide, and does not requeue.
CANCEL=$(export "${requeue_env[@]}" WEFT_RUN_DIR="$WORK/cancel" && submit cancel train.sbatch)
wait_lines cancel 20
scancel "$CANCEL"
for _ in $(seq 600); do
  grep -q "not requeueing" "$WORK/cancel.out" 2>/dev/null && break
  sleep 0.1
done
stop="$(stopped_at cancel SIGTERM)"
expect_log cancel "checkpoint saved in $(ckpt_of cancel "$stop")" "the batch script got SIGTERM" \
  "job $CANCEL is ending (" "): cancelled, not requeueing (submit again" \
  "with WEFT_RUN_DIR=$WORK/cancel to go on)"
sleep 2
[ "$(field "$CANCEL" JobState)" = CANCELLED ] && [ "$(field "$CANCEL" Restarts)" = 0 ] ||
  fail "job $CANCEL: $(field "$CANCEL" JobState), Restarts=$(field "$CANCEL" Restarts) after scancel"
echo "scancel: job $CANCEL saved a checkpoint at step $stop and stayed CANCELLED"

# Serving the model job 1 trained.
"$WEFT" ckpt export --from "$WORK/train/ckpt" --to "$WORK/exported" >/dev/null
SERVE=$(WEFT_MODEL="$WORK/exported" WEFT_PORT=0 WEFT_SERVE_FLAGS="--served-model-name counter" \
  submit serve serve.sbatch)
url=""
for _ in $(seq 480); do
  url="$(grep -o 'listening on http://[^ ]*' "$WORK/serve.out" 2>/dev/null | cut -d' ' -f3 || true)"
  [ -n "$url" ] && break
  state="$(field "$SERVE" JobState)"
  ended "$state" && fail "serve job $SERVE ended ($state) before listening"
  sleep 0.25
done
[ -n "$url" ] || fail "serve job $SERVE never printed its listening line"
reply="$(curl -sS --max-time 60 "$url/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "counter", "prompt": [10, 12, 14, 16], "max_tokens": 4, "temperature": 0,
       "return_token_ids": true}')"
grep -q '"choices"' <<<"$reply" || fail "serve job $SERVE answered: $reply"
scancel --signal=TERM "$SERVE"
expect_completed "$SERVE" serve
expect_log serve "with 2 ranks" "weft: the server stopped"
echo "serve.sbatch: job $SERVE answered a completion on $url and stopped cleanly"

OK=1
echo "slurm: all jobs passed in $((SECONDS - START)) s"
