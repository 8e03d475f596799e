// Creating and connecting the control socket's unix-domain endpoint, with
// the checks a user relies on: 0600 permissions, a stale socket replaced,
// anything else at the path (a live kvmini, a regular file) refused.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace kvmini::vmm {

// Binds and listens on `path` (non-blocking, close-on-exec). The socket file
// is created with mode 0600. An existing socket nobody listens on is
// replaced; a live one, or any other kind of file, is an error.
absl::StatusOr<int> ListenOnUnixSocket(const std::string& path);

// The checks ListenOnUnixSocket makes before it creates anything: the path
// fits a socket address, its directory exists, and nothing but a stale
// socket is there. kvmini runs them before it starts the machine, so a
// bad --control path fails early and leaves nothing behind.
absl::Status CheckUnixSocketPathFree(const std::string& path);

// Connects to `path` (blocking, close-on-exec).
absl::StatusOr<int> ConnectToUnixSocket(const std::string& path);

}  // namespace kvmini::vmm
