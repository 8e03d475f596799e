#include "vmm/control/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "util/path.h"

namespace kvmini::vmm {
namespace {

absl::StatusOr<sockaddr_un> AddressFor(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "control socket path '", path, "' must be 1 to ", sizeof(address.sun_path) - 1,
        " bytes long"));
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

std::string SocketError(const std::string& path, absl::string_view what) {
  return absl::StrCat("control socket ", path, ": ", what);
}

}  // namespace

absl::StatusOr<int> ConnectToUnixSocket(const std::string& path) {
  absl::StatusOr<sockaddr_un> address = AddressFor(path);
  if (!address.ok()) return address.status();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, SocketError(path, "socket"));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&*address), sizeof(*address)) < 0) {
    int saved = errno;
    close(fd);
    return absl::ErrnoToStatus(saved, SocketError(path, "cannot connect"));
  }
  return fd;
}

absl::Status CheckUnixSocketPathFree(const std::string& path) {
  if (absl::Status status = AddressFor(path).status(); !status.ok()) return status;
  const std::string directory = util::ParentDirectory(path);
  struct stat info;
  if (stat(directory.c_str(), &info) < 0) {
    return absl::ErrnoToStatus(errno, SocketError(path, absl::StrCat("directory ", directory)));
  }
  if (!S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        SocketError(path, absl::StrCat(directory, " is not a directory")));
  }
  if (lstat(path.c_str(), &info) < 0) return absl::OkStatus();
  if (!S_ISSOCK(info.st_mode)) {
    return absl::AlreadyExistsError(
        SocketError(path, "the path exists and is not a socket; refusing to replace it"));
  }
  absl::StatusOr<int> probe = ConnectToUnixSocket(path);
  if (probe.ok()) {
    close(*probe);
    return absl::AlreadyExistsError(
        SocketError(path, "another process is listening on it (is kvmini already running?)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ListenOnUnixSocket(const std::string& path) {
  absl::StatusOr<sockaddr_un> address = AddressFor(path);
  if (!address.ok()) return address.status();
  if (absl::Status status = CheckUnixSocketPathFree(path); !status.ok()) return status;
  struct stat existing;
  // Nobody listens on a socket still there: left behind by a process that died.
  if (lstat(path.c_str(), &existing) == 0 && unlink(path.c_str()) < 0) {
    return absl::ErrnoToStatus(errno, SocketError(path, "cannot remove the stale socket"));
  }

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, SocketError(path, "socket"));
  // The mode of the socket inode becomes the file's mode at bind time, so
  // the file never exists with wider permissions (no chmod race).
  if (fchmod(fd, 0600) < 0 ||
      bind(fd, reinterpret_cast<const sockaddr*>(&*address), sizeof(*address)) < 0) {
    int saved = errno;
    close(fd);
    return absl::ErrnoToStatus(saved, SocketError(path, "cannot create it"));
  }
  if (chmod(path.c_str(), 0600) < 0 || listen(fd, 16) < 0) {
    int saved = errno;
    close(fd);
    unlink(path.c_str());
    return absl::ErrnoToStatus(saved, SocketError(path, "cannot listen"));
  }
  return fd;
}

}  // namespace kvmini::vmm
