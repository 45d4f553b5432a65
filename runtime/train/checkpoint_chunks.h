// Geometry of checkpoint chunks: a tensor of a checkpoint is stored as chunks, each an
// axis-aligned box [offsets, offsets + lengths) of the global tensor. Loading under another
// mesh intersects the wanted box with the stored ones (PyTorch DCP, Megatron dist-checkpointing).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "runtime/io/checkpoint.pb.h"

namespace weft::train {

// A box of a tensor in global coordinates (a 0-d tensor's box has no dims and one element).
struct Box {
  std::vector<int64_t> offsets;
  std::vector<int64_t> lengths;
};

[[nodiscard]] int64_t box_volume(const Box& box);
// The common part of two boxes of the same rank; nullopt when it holds no element.
[[nodiscard]] std::optional<Box> intersect(const Box& a, const Box& b);
[[nodiscard]] Box chunk_box(const io::TensorChunk& chunk);
[[nodiscard]] Box whole_box(const io::TensorEntry& entry);

// Copies `region` (global coordinates, inside both boxes) from `src`, a row-major buffer holding
// `src_box`, into `dst`, a row-major buffer holding `dst_box`, one innermost row at a time.
void copy_region(const float* src, const Box& src_box, float* dst, const Box& dst_box,
                 const Box& region);

// Every chunk has one offset and one length per dim and lies inside the tensor, and no two
// chunks overlap (so counting elements measures coverage).
absl::Status check_chunks_fit(const io::TensorEntry& entry);
// check_chunks_fit, and the chunks cover the whole tensor.
absl::Status check_chunks_tile(const io::TensorEntry& entry);

}  // namespace weft::train
