// File-name helpers shared by the modules that check a path before creating
// something there (kvmini's serial log, its control socket).
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace kvmini::util {

// The directory a file at `path` would be created in: everything before
// the last '/', "/" for a file in the root, "." for a bare name. Purely
// textual (no file system access, no normalisation): "a/b/" gives "a/b".
std::string ParentDirectory(absl::string_view path);

}  // namespace kvmini::util
