// The kvmini command line: the absl flags (--kernel, --initrd, --cmdline,
// --append, --cpus, --memory, --serial), their parsing from argv and the
// --help text generated from them. Parsing is our own small loop over the
// absl flag registry, so that every mistake - unknown flag, missing or
// malformed value, stray argument - is a one-line InvalidArgument error
// that kvmini turns into exit status 2 (absl's own parser exits with 1).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/machine/launch_options.h"

namespace kvmini::vmm {

struct CliRequest {
  bool help = false;  // --help / -h: print UsageText(), exit 0
  LaunchFlags flags;
};

// `arguments` excludes the program name. Flags not given keep their
// defaults (each call starts from the defaults).
absl::StatusOr<CliRequest> ParseCli(const std::vector<std::string>& arguments);

// The --help text: synopsis, every flag with its default, exit statuses.
std::string UsageText(absl::string_view program);

}  // namespace kvmini::vmm
