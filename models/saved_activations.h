// What a layer's forward keeps for its backward. Layers behind an interface (token mixers, feed
// forwards) derive their own struct from LayerSaved; the caller owns one per forward in flight,
// so a layer may have several forwards outstanding (pipeline schedules) and memory is freed as
// soon as the caller drops it after the backward.
#pragma once

#include <memory>

namespace weft::models {

struct LayerSaved {
  virtual ~LayerSaved() = default;
};

using SavedPtr = std::unique_ptr<LayerSaved>;

}  // namespace weft::models
