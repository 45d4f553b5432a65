// WEFT_NCCL_CHECK(call): aborts naming the call and NCCL's error string unless it returned
// ncclSuccess. CUDA builds only.
#pragma once

#include <nccl.h>

#include "runtime/core/check.h"

#define WEFT_NCCL_CHECK(call)                                  \
  do {                                                         \
    const ncclResult_t weft_nccl_rc_ = (call);                 \
    WEFT_CHECK(weft_nccl_rc_ == ncclSuccess)                   \
        << #call << ": " << ncclGetErrorString(weft_nccl_rc_); \
  } while (0)
