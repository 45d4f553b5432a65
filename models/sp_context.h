// The sequence-parallel position of this rank, handed to every mixer's constructor: the
// algorithms that replace the attention cores when the sequence is split over an sp group
// (parallel/sp_attention.h, parallel/sp_linear_attention.h). Null: this rank holds whole
// sequences. The model owns the algorithms (one per kind, shared by its layers).
#pragma once

#include "parallel/sp_attention.h"
#include "parallel/sp_linear_attention.h"

namespace weft::models {

struct SpContext {
  parallel::SequenceParallelAttention* attention = nullptr;
  parallel::SequenceParallelLinearAttention* linear = nullptr;
};

}  // namespace weft::models
