// RunConfig (run_config.proto) from a protobuf text file, and command-line flags over it.
//
// Fields are named by path: "global_batch", "parallel.tp". Dashes count as underscores
// ("global-batch"), and a nested leaf whose name is unique may drop its parents ("tp" for
// "parallel.tp"), so a flag's name can be used as is.
//
// The CLI builds an `overrides` RunConfig from the flags the user gave (set_run_config_field)
// and records their names; merge_run_config then lays exactly those over the file's values,
// so a flag given as 0 or "" still wins, and a flag not given never clobbers the file.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/io/run_config.pb.h"

namespace weft::io {

// `source` names the text in errors ("run.pbtxt:3:7: ...", line and column from 1).
absl::StatusOr<RunConfig> parse_run_config(const std::string& text,
                                           const std::string& source = "run config");
absl::StatusOr<RunConfig> load_run_config(const std::string& path);

// Every settable leaf field path, in declaration order ("model", ..., "parallel.tp", ...).
std::vector<std::string> run_config_field_paths();

// Parses `value` as the field's type ("0.001" for lr, "true", a bare string for paths) and sets
// it. Errors name the field and the value.
absl::Status set_run_config_field(RunConfig& config, const std::string& field,
                                  const std::string& value);

// For each field named in `set_fields`, copies its value from `overrides` into `into`.
absl::Status merge_run_config(const RunConfig& overrides, const std::set<std::string>& set_fields,
                              RunConfig& into);

std::string run_config_to_text(const RunConfig& config);

}  // namespace weft::io
