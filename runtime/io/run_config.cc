#include "runtime/io/run_config.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/core/check.h"
#include "runtime/core/status.h"
#include "runtime/io/file_util.h"

namespace weft::io {
namespace {

namespace pb = google::protobuf;

// Keeps the first error with its position (protobuf counts lines and columns from 0).
class FirstErrorCollector : public pb::io::ErrorCollector {
 public:
  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    if (error_.empty()) error_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  std::string error_;
};

void collect_leaf_paths(const pb::Descriptor* descriptor, const std::string& prefix,
                        std::vector<std::string>& out) {
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const pb::FieldDescriptor* field = descriptor->field(i);
    const std::string path = prefix + field->name();
    if (field->is_repeated()) continue;  // no single flag value can set a list
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      collect_leaf_paths(field->message_type(), path + ".", out);
    } else {
      out.push_back(path);
    }
  }
}

// The chain of fields from RunConfig down to the named leaf.
absl::StatusOr<std::vector<const pb::FieldDescriptor*>> resolve(std::string path) {
  std::replace(path.begin(), path.end(), '-', '_');
  const std::vector<std::string> leaves = run_config_field_paths();
  if (std::find(leaves.begin(), leaves.end(), path) == leaves.end()) {
    std::vector<std::string> matches;
    for (const std::string& leaf : leaves) {
      if (leaf.size() > path.size() && leaf.ends_with("." + path)) matches.push_back(leaf);
    }
    if (matches.size() != 1) {
      return invalid_argument("RunConfig has no field \"", path,
                              "\" (fields: ", absl::StrJoin(leaves, ", "), ")");
    }
    path = matches[0];
  }
  std::vector<const pb::FieldDescriptor*> chain;
  const pb::Descriptor* descriptor = RunConfig::descriptor();
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const pb::FieldDescriptor* field = descriptor->FindFieldByName(
        path.substr(start, dot == std::string::npos ? dot : dot - start));
    WEFT_CHECK(field != nullptr) << "leaf path " << path << " does not resolve";
    chain.push_back(field);
    if (dot == std::string::npos) return chain;
    descriptor = field->message_type();
    start = dot + 1;
  }
}

// The message that holds the chain's last field, creating parents as needed.
pb::Message* mutable_holder(pb::Message* root,
                            const std::vector<const pb::FieldDescriptor*>& chain) {
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    root = root->GetReflection()->MutableMessage(root, chain[i]);
  }
  return root;
}

const pb::Message& holder(const pb::Message& root,
                          const std::vector<const pb::FieldDescriptor*>& chain) {
  const pb::Message* message = &root;
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    message = &message->GetReflection()->GetMessage(*message, chain[i]);
  }
  return *message;
}

void copy_scalar(const pb::Message& from, pb::Message* to, const pb::FieldDescriptor* field) {
  const pb::Reflection* in = from.GetReflection();
  const pb::Reflection* out = to->GetReflection();
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return out->SetInt32(to, field, in->GetInt32(from, field));
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return out->SetInt64(to, field, in->GetInt64(from, field));
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return out->SetUInt32(to, field, in->GetUInt32(from, field));
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return out->SetUInt64(to, field, in->GetUInt64(from, field));
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return out->SetDouble(to, field, in->GetDouble(from, field));
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return out->SetFloat(to, field, in->GetFloat(from, field));
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return out->SetBool(to, field, in->GetBool(from, field));
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return out->SetEnumValue(to, field, in->GetEnumValue(from, field));
    case pb::FieldDescriptor::CPPTYPE_STRING:
      return out->SetString(to, field, in->GetString(from, field));
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  WEFT_CHECK(false) << "RunConfig leaf " << field->full_name() << " is a message";
}

}  // namespace

absl::StatusOr<RunConfig> parse_run_config(const std::string& text, const std::string& source) {
  RunConfig config;
  FirstErrorCollector errors;
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &config)) {
    return invalid_argument(source, ":",
                            errors.error().empty() ? " not a valid RunConfig" : errors.error());
  }
  return config;
}

absl::StatusOr<RunConfig> load_run_config(const std::string& path) {
  WEFT_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return parse_run_config(text, path);
}

std::vector<std::string> run_config_field_paths() {
  std::vector<std::string> paths;
  collect_leaf_paths(RunConfig::descriptor(), "", paths);
  return paths;
}

absl::Status set_run_config_field(RunConfig& config, const std::string& field,
                                  const std::string& value) {
  WEFT_ASSIGN_OR_RETURN(auto chain, resolve(field));
  pb::Message* message = mutable_holder(&config, chain);
  const pb::FieldDescriptor* leaf = chain.back();
  if (leaf->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
    message->GetReflection()->SetString(message, leaf, value);
    return absl::OkStatus();
  }
  FirstErrorCollector errors;  // recorded, not logged: the message below says it all
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFieldValueFromString(value, leaf, message)) {
    return invalid_argument(field, ": \"", value, "\" is not a valid ", leaf->type_name(),
                            " for RunConfig.", leaf->name());
  }
  return absl::OkStatus();
}

absl::Status merge_run_config(const RunConfig& overrides, const std::set<std::string>& set_fields,
                              RunConfig& into) {
  for (const std::string& field : set_fields) {
    WEFT_ASSIGN_OR_RETURN(auto chain, resolve(field));
    copy_scalar(holder(overrides, chain), mutable_holder(&into, chain), chain.back());
  }
  return absl::OkStatus();
}

std::string run_config_to_text(const RunConfig& config) {
  std::string text;
  pb::TextFormat::PrintToString(config, &text);
  return text;
}

}  // namespace weft::io
