// Graceful stop on SIGTERM (what Slurm and most schedulers send before a kill) and SIGUSR1 (what
// `#SBATCH --signal=B:USR1@120` sends ahead of the time limit, and what mpirun forwards to every
// rank): the handler only records the signal; the training loop agrees on it at the next step
// boundary, saves a checkpoint and exits with kExitStopped so that the job can be requeued.
#pragma once

namespace weft::train {

// The exit code of a run stopped by a signal after saving (EX_TEMPFAIL: "try again later").
inline constexpr int kExitStopped = 75;

// Installs the handlers (idempotent).
void install_stop_handlers();
// The signal received since the handlers were installed, or 0.
[[nodiscard]] int stop_signal_received();
// "SIGTERM", "SIGUSR1", ...
[[nodiscard]] const char* signal_name(int signal);

}  // namespace weft::train
