#include "runtime/train/checkpoint_chunks.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace weft::train {
namespace {

// Row-major strides of a box's buffer.
std::vector<int64_t> strides_of(const std::vector<int64_t>& lengths) {
  std::vector<int64_t> strides(lengths.size(), 1);
  for (int d = static_cast<int>(lengths.size()) - 2; d >= 0; --d) {
    strides[d] = strides[d + 1] * lengths[d + 1];
  }
  return strides;
}

// Offset in `box`'s buffer of the global position `at`.
int64_t index_in(const Box& box, const std::vector<int64_t>& strides,
                 const std::vector<int64_t>& at) {
  int64_t index = 0;
  for (size_t d = 0; d < at.size(); ++d) index += (at[d] - box.offsets[d]) * strides[d];
  return index;
}

std::string box_str(const Box& box) {
  return absl::StrCat("offsets [", absl::StrJoin(box.offsets, ","), "] lengths [",
                      absl::StrJoin(box.lengths, ","), "]");
}

}  // namespace

int64_t box_volume(const Box& box) {
  int64_t n = 1;
  for (int64_t l : box.lengths) n *= l;
  return n;
}

std::optional<Box> intersect(const Box& a, const Box& b) {
  Box out;
  for (size_t d = 0; d < a.offsets.size(); ++d) {
    const int64_t begin = std::max(a.offsets[d], b.offsets[d]);
    const int64_t end = std::min(a.offsets[d] + a.lengths[d], b.offsets[d] + b.lengths[d]);
    if (end <= begin) return std::nullopt;
    out.offsets.push_back(begin);
    out.lengths.push_back(end - begin);
  }
  return out;
}

Box chunk_box(const io::TensorChunk& chunk) {
  return {{chunk.offsets().begin(), chunk.offsets().end()},
          {chunk.lengths().begin(), chunk.lengths().end()}};
}

Box whole_box(const io::TensorEntry& entry) {
  return {std::vector<int64_t>(entry.global_shape_size(), 0),
          {entry.global_shape().begin(), entry.global_shape().end()}};
}

void copy_region(const float* src, const Box& src_box, float* dst, const Box& dst_box,
                 const Box& region) {
  const int nd = static_cast<int>(region.lengths.size());
  if (box_volume(region) == 0) return;
  if (nd == 0) {
    dst[0] = src[0];
    return;
  }
  const std::vector<int64_t> src_strides = strides_of(src_box.lengths);
  const std::vector<int64_t> dst_strides = strides_of(dst_box.lengths);
  const int64_t row = region.lengths[nd - 1];
  const int64_t rows = box_volume(region) / row;
  std::vector<int64_t> at = region.offsets;  // global position of the current row's start
  for (int64_t r = 0; r < rows; ++r) {
    const float* from = src + index_in(src_box, src_strides, at);
    std::copy(from, from + row, dst + index_in(dst_box, dst_strides, at));
    for (int d = nd - 2; d >= 0; --d) {
      if (++at[d] < region.offsets[d] + region.lengths[d]) break;
      at[d] = region.offsets[d];
    }
  }
}

absl::Status check_chunks_fit(const io::TensorEntry& entry) {
  const int nd = entry.global_shape_size();
  for (const io::TensorChunk& chunk : entry.chunks()) {
    if (chunk.offsets_size() != nd || chunk.lengths_size() != nd) {
      return absl::DataLossError(absl::StrCat("tensor '", entry.name(), "': a chunk has ",
                                              chunk.offsets_size(), " offsets and ",
                                              chunk.lengths_size(), " lengths for ", nd, " dims"));
    }
    for (int d = 0; d < nd; ++d) {
      if (chunk.offsets(d) < 0 || chunk.lengths(d) < 0 ||
          chunk.offsets(d) + chunk.lengths(d) > entry.global_shape(d)) {
        return absl::DataLossError(absl::StrCat("tensor '", entry.name(), "': chunk dim ", d, " [",
                                                chunk.offsets(d), ", +", chunk.lengths(d),
                                                ") exceeds ", entry.global_shape(d)));
      }
    }
  }
  for (int i = 0; i < entry.chunks_size(); ++i) {
    for (int j = i + 1; j < entry.chunks_size(); ++j) {
      const Box a = chunk_box(entry.chunks(i));
      if (box_volume(a) > 0 && intersect(a, chunk_box(entry.chunks(j)))) {
        return absl::DataLossError(absl::StrCat("tensor '", entry.name(), "': chunks ", box_str(a),
                                                " (", entry.chunks(i).file(), ") and ",
                                                box_str(chunk_box(entry.chunks(j))), " (",
                                                entry.chunks(j).file(), ") overlap"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status check_chunks_tile(const io::TensorEntry& entry) {
  if (absl::Status fit = check_chunks_fit(entry); !fit.ok()) return fit;
  int64_t covered = 0;
  for (const io::TensorChunk& chunk : entry.chunks()) covered += box_volume(chunk_box(chunk));
  const int64_t want = box_volume(whole_box(entry));
  if (covered != want) {
    return absl::DataLossError(absl::StrCat("tensor '", entry.name(), "': chunks cover ", covered,
                                            " of ", want, " elements"));
  }
  return absl::OkStatus();
}

}  // namespace weft::train
