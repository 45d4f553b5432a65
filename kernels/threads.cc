#include "kernels/threads.h"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace weft::kernels {

void set_cpu_threads(int threads) { openblas_set_num_threads(std::max(1, threads)); }

int cpu_threads() { return openblas_get_num_threads(); }

int default_cpu_threads(int local_ranks) {
  for (const char* name : {"WEFT_NUM_THREADS", "OPENBLAS_NUM_THREADS"}) {
    if (const char* env = std::getenv(name); env != nullptr && std::atoi(env) > 0) {
      return std::atoi(env);
    }
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, local_ranks));
}

}  // namespace weft::kernels
