// One pre-norm decoder layer:
//   h = x + mixer(input_layernorm(x));   out = h + ffn(post_attention_layernorm(h))
// The mixer is softmax or linear attention (config.layer_types), the ffn a SwiGLU MLP or an
// MoE block (config.num_local_experts > 0).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "models/feed_forward.h"
#include "models/rmsnorm.h"
#include "models/token_mixer.h"
#include "runtime/io/model_config.h"

namespace weft::models {

class DecoderBlock {
 public:
  struct Saved {
    RmsNorm::Saved norm1, norm2;
    SavedPtr mixer, ffn;
  };

  DecoderBlock(const io::ModelConfig& config, int64_t layer);

  // x [N, D] -> [N, D]. cache: decoding state of this layer (or null); saved: fill for backward.
  [[nodiscard]] Tensor forward(const TokenBatch& batch, const Tensor& x, MixerCache* cache,
                               Saved* saved) const;
  // dy [N, D] -> dx [N, D]; adds into the parameter gradients.
  [[nodiscard]] Tensor backward(Saved& saved, const Tensor& dy);

  [[nodiscard]] std::unique_ptr<MixerCache> new_cache(int64_t batch, int64_t max_len) const {
    return mixer_->new_cache(batch, max_len);
  }
  void collect_params(std::vector<Param*>& out);

 private:
  RmsNorm input_norm_;
  std::unique_ptr<TokenMixer> mixer_;
  RmsNorm post_attention_norm_;
  std::unique_ptr<FeedForward> ffn_;
};

}  // namespace weft::models
