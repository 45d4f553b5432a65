#include "runtime/serve/tokenizer_sentencepiece.h"

#include <sentencepiece_processor.h>

namespace weft::serve {

SentencePieceModel::SentencePieceModel()
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
SentencePieceModel::~SentencePieceModel() = default;

std::unique_ptr<SentencePieceModel> SentencePieceModel::load(const std::string& path,
                                                             std::string* error) {
  std::unique_ptr<SentencePieceModel> model(new SentencePieceModel());
  const auto status = model->sp_->Load(path);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return model;
}

std::vector<int32_t> SentencePieceModel::encode(std::string_view text) const {
  std::vector<int> ids;
  sp_->Encode(text, &ids).IgnoreError();
  return {ids.begin(), ids.end()};
}

std::string SentencePieceModel::decode(const std::vector<int32_t>& ids) const {
  return sp_->DecodeIds(std::vector<int>(ids.begin(), ids.end()));
}

int SentencePieceModel::size() const { return sp_->GetPieceSize(); }
std::string SentencePieceModel::id_to_piece(int32_t id) const { return sp_->IdToPiece(id); }
int32_t SentencePieceModel::piece_to_id(std::string_view piece) const {
  return sp_->PieceToId(piece);
}
bool SentencePieceModel::is_special(int32_t id) const {
  return sp_->IsControl(id) || sp_->IsUnknown(id);
}
int32_t SentencePieceModel::bos_id() const { return sp_->bos_id(); }
int32_t SentencePieceModel::eos_id() const { return sp_->eos_id(); }

}  // namespace weft::serve
