#include "models/rotary_embedding.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>

#include "kernels/ops.h"

namespace weft::models {
namespace {

using io::RopeType;

// _compute_default_rope_parameters: 1 / base^(2i/d) in f32.
std::vector<float> default_inv_freq(float base, int64_t d) {
  std::vector<float> inv(d / 2);
  for (int64_t i = 0; i < d / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(d);
    inv[i] = 1.0f / std::pow(base, exponent);
  }
  return inv;
}

// _compute_dynamic_ntk_parameters: the base for sequences of `seq_len` (at least max_pos).
float dynamic_base(const RopeConfig& r, int64_t seq_len) {
  const double max_pos = static_cast<double>(r.max_position_embeddings);
  const double len = std::max(static_cast<double>(seq_len), max_pos);
  const double d = static_cast<double>(r.head_dim), f = r.scaling.factor;
  return static_cast<float>(r.theta * std::pow(f * len / max_pos - (f - 1), d / (d - 2)));
}

// _compute_yarn_parameters: inv_freq / factor (interpolation) below the correction range,
// inv_freq (extrapolation) above it, a linear ramp between.
std::vector<float> yarn_inv_freq(const RopeConfig& r) {
  const io::RopeScaling& s = r.scaling;
  const int64_t d = r.head_dim;
  // find_correction_dim: the dimension whose wavelength turns `rotations` times over the
  // original context.
  const auto correction_dim = [&](double rotations) {
    const double original = static_cast<double>(s.original_max_position_embeddings);
    return static_cast<double>(d) * std::log(original / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(r.theta));
  };
  double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(d - 1));  // transformers' bound (d - 1, not d/2 - 1)
  if (low == high) high += 0.001;                     // linear_ramp_factor's guard
  const float factor = static_cast<float>(s.factor);
  std::vector<float> inv(d / 2);
  for (size_t i = 0; i < inv.size(); ++i) {
    const float pos_freq =
        std::pow(static_cast<float>(r.theta), static_cast<float>(2 * i) / static_cast<float>(d));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (factor * pos_freq);
    const float ramp = std::clamp(
        (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f,
        1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    inv[i] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
  return inv;
}

// _compute_llama3_parameters: by wavelength 2*pi / inv_freq.
std::vector<float> llama3_inv_freq(const RopeConfig& r) {
  const io::RopeScaling& s = r.scaling;
  const double original = static_cast<double>(s.original_max_position_embeddings);
  const float low_freq_wavelen = static_cast<float>(original / s.low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(original / s.high_freq_factor);
  const float factor = static_cast<float>(s.factor);
  const float two_pi = static_cast<float>(2 * std::numbers::pi);
  std::vector<float> inv = default_inv_freq(static_cast<float>(r.theta), r.head_dim);
  for (float& f : inv) {
    const float wavelen = two_pi / f;
    const float scaled = wavelen > low_freq_wavelen ? f / factor : f;
    const float smooth =
        (static_cast<float>(original) / wavelen - static_cast<float>(s.low_freq_factor)) /
        static_cast<float>(s.high_freq_factor - s.low_freq_factor);
    const float smoothed = (1.0f - smooth) * scaled / factor + smooth * scaled;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    f = medium ? smoothed : scaled;
  }
  return inv;
}

}  // namespace

RopeConfig RopeConfig::of(const io::ModelConfig& config) {
  return {config.rope_theta, config.head_dim, config.max_position_embeddings, config.rope_scaling};
}

RopeFrequencies rope_frequencies(const RopeConfig& rope, int64_t seq_len) {
  const float theta = static_cast<float>(rope.theta);
  RopeFrequencies out;
  switch (rope.scaling.type) {
    case RopeType::kDefault:
      out.inv_freq = default_inv_freq(theta, rope.head_dim);
      break;
    case RopeType::kLinear:
      out.inv_freq = default_inv_freq(theta, rope.head_dim);
      for (float& f : out.inv_freq) f /= static_cast<float>(rope.scaling.factor);
      break;
    case RopeType::kDynamic:
      out.inv_freq = default_inv_freq(dynamic_base(rope, seq_len), rope.head_dim);
      break;
    case RopeType::kYarn:
      out.inv_freq = yarn_inv_freq(rope);
      out.attention_factor = static_cast<float>(rope.scaling.attention_factor);
      break;
    case RopeType::kLlama3:
      out.inv_freq = llama3_inv_freq(rope);
      break;
  }
  return out;
}

RotaryEmbedding::RotaryEmbedding(const io::ModelConfig& config) : rope_(RopeConfig::of(config)) {
  const RopeFrequencies freqs = rope_frequencies(rope_, rope_.max_position_embeddings);
  fixed_ = Tensor::from_floats(freqs.inv_freq, {rope_.head_dim / 2}).on(default_device());
  attention_factor_ = freqs.attention_factor;
}

void RotaryEmbedding::forward(Tensor& x, const TokenBatch& batch) const {
  kernels::rope_forward(x, batch.positions, inv_freq(batch, x.device()), attention_factor_);
}

void RotaryEmbedding::backward(Tensor& dx, const TokenBatch& batch) const {
  kernels::rope_backward(dx, batch.positions, inv_freq(batch, dx.device()), attention_factor_);
}

Tensor RotaryEmbedding::inv_freq(const TokenBatch& batch, Device device) const {
  Tensor table = fixed_;
  if (rope_.scaling.type == RopeType::kDynamic) {
    const int64_t half = rope_.head_dim / 2;
    if (!batch.seq_lens.defined()) {
      WEFT_CHECK(batch.paged == nullptr) << "a serving step needs TokenBatch::seq_lens";
      table = Tensor::from_floats(rope_frequencies(rope_, batch.rope_len()).inv_freq, {half});
    } else {
      // [T, d/2]: each token's request length, one computation per distinct length.
      const std::vector<int64_t> lens = batch.seq_lens.to_ints();
      std::map<int64_t, std::vector<float>> by_len;
      std::vector<float> rows;
      rows.reserve(lens.size() * half);
      for (const int64_t len : lens) {
        auto it = by_len.find(len);
        if (it == by_len.end())
          it = by_len.emplace(len, rope_frequencies(rope_, len).inv_freq).first;
        rows.insert(rows.end(), it->second.begin(), it->second.end());
      }
      table = Tensor::from_floats(rows, {static_cast<int64_t>(lens.size()), half});
    }
  }
  // The fixed table lives on the model's device; a dynamic one is copied there (d/2 or T x d/2
  // floats).
  return table.on(device);
}

}  // namespace weft::models
