#include "block/block_backend.h"

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "block/image_file.h"
#include "block/io_engine.h"
#include "block/raw_backend.h"

namespace kvmini::block {

absl::StatusOr<std::unique_ptr<BlockBackend>> BlockBackend::Open(const std::string& path,
                                                                 const BlockOptions& options,
                                                                 util::AioContext& context) {
  absl::StatusOr<ImageFile> image = OpenImageFile(path, options.read_only, options.direct);
  if (!image.ok()) return image.status();
  absl::StatusOr<IoEngine*> engine = EngineForContext(context, options.engine);
  if (!engine.ok()) {
    close(image->fd);
    if (options.engine == AioEngine::kIoUring) {
      return absl::Status(
          engine.status().code(),
          absl::StrCat("disk image '", path, "': aio=io_uring was requested but io_uring ",
                       "cannot be set up (", engine.status().message(),
                       "; it may be disabled by the kernel.io_uring_disabled sysctl or a "
                       "seccomp filter); use aio=threads or aio=auto"));
    }
    return absl::Status(engine.status().code(),
                        absl::StrCat("disk image '", path, "': cannot start the I/O threads: ",
                                     engine.status().message()));
  }
  return std::unique_ptr<BlockBackend>(new RawBackend(path, *image, options, context, **engine));
}

}  // namespace kvmini::block
