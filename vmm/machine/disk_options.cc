#include "vmm/machine/disk_options.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvmini::vmm {
namespace {

constexpr const char* kKeys[] = {"path",   "id",     "iothread", "readonly",
                                 "direct", "queues", "serial",   "aio"};

absl::Status OptionError(DiskType type, absl::string_view text, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(DiskFlagName(type), " ", text, ": ", what));
}

// Splits at single commas; ",," stands for a comma inside a value.
std::vector<std::string> SplitOptions(absl::string_view text) {
  std::vector<std::string> items(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ',') {
      items.back().push_back(text[i]);
    } else if (i + 1 < text.size() && text[i + 1] == ',') {
      items.back().push_back(',');
      ++i;
    } else {
      items.emplace_back();
    }
  }
  return items;
}

// The mistakes in the shape of a KEY=VALUE,... list; each flag words them
// its own way.
enum class ListMistake { kEmptyItem, kNotKeyValue, kKeyGivenTwice };
// Builds the error for a mistake from the item (kEmptyItem, kNotKeyValue)
// or the key (kKeyGivenTwice) it is about.
using ListMistakeError = absl::FunctionRef<absl::Status(ListMistake, absl::string_view)>;
using KeyValueHandler =
    absl::FunctionRef<absl::Status(absl::string_view key, absl::string_view value)>;

// Hands each KEY=VALUE of `text` (split by SplitOptions; the value may be
// empty) to `handle` in order. Stops at the first error, a list mistake or
// one `handle` returns, so the first mistake from the left is the one
// reported whichever kind it is.
absl::Status ForEachKeyValue(absl::string_view text, ListMistakeError mistake,
                             KeyValueHandler handle) {
  std::set<std::string, std::less<>> seen;
  for (const std::string& item : SplitOptions(text)) {
    if (item.empty()) return mistake(ListMistake::kEmptyItem, item);
    size_t equals = item.find('=');
    if (equals == std::string::npos) return mistake(ListMistake::kNotKeyValue, item);
    absl::string_view key = absl::string_view(item).substr(0, equals);
    if (!seen.emplace(key).second) return mistake(ListMistake::kKeyGivenTwice, key);
    if (absl::Status status = handle(key, absl::string_view(item).substr(equals + 1));
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

bool IsKnownKey(absl::string_view key) {
  for (const char* known : kKeys) {
    if (key == known) return true;
  }
  return false;
}

absl::StatusOr<bool> ParseOnOff(absl::string_view key, absl::string_view value) {
  if (value == "on") return true;
  if (value == "off") return false;
  return absl::InvalidArgumentError(absl::StrCat(key, "=", value, " is neither 'on' nor 'off'"));
}

bool IsPrintableAscii(absl::string_view text) {
  for (char c : text) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

// Applies one key=value to `spec`; the error says what is wrong with it.
absl::Status ApplyOption(DiskSpec& spec, absl::string_view key, absl::string_view value) {
  if (key == "path") {
    spec.path = std::string(value);
  } else if (key == "id") {
    if (!IsValidId(value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("id '", value, "' is not a valid id (1-", kMaxIdBytes,
                       " letters, digits, '-', '_' or '.', starting with a letter)"));
    }
    spec.id = std::string(value);
  } else if (key == "iothread") {
    spec.iothread = std::string(value);
  } else if (key == "readonly" || key == "direct") {
    absl::StatusOr<bool> on = ParseOnOff(key, value);
    if (!on.ok()) return on.status();
    (key == "readonly" ? spec.read_only : spec.direct) = *on;
  } else if (key == "queues") {
    int queues = 0;
    if (!absl::SimpleAtoi(value, &queues) || queues < 1 || queues > kMaxDiskQueues ||
        !absl::ascii_isdigit(static_cast<unsigned char>(value.front()))) {
      return absl::InvalidArgumentError(
          absl::StrCat("queues=", value, " is out of range (1 to ", kMaxDiskQueues, ")"));
    }
    spec.queues = static_cast<uint16_t>(queues);
  } else if (key == "serial") {
    const size_t limit = spec.type == DiskType::kBlk ? kMaxBlkSerialBytes : kMaxScsiSerialBytes;
    if (value.size() > limit || !IsPrintableAscii(value)) {
      return absl::InvalidArgumentError(absl::StrCat("serial '", absl::CEscape(value),
                                                     "' must be at most ", limit,
                                                     " printable ASCII characters"));
    }
    spec.serial = std::string(value);
  } else if (key == "aio") {
    if (value == "io_uring") {
      spec.engine = block::AioEngine::kIoUring;
    } else if (value == "threads") {
      spec.engine = block::AioEngine::kThreads;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("aio=", value, " is not an engine (io_uring or threads)"));
    }
  }
  return absl::OkStatus();
}

// Opens the image the way the disk will (read-only or read-write) to catch
// a missing, unreadable or read-only file before anything starts.
absl::Status CheckImage(const DiskSpec& spec) {
  // Non-blocking: opening a FIFO read-only would wait for a writer.
  int fd = open(spec.path.c_str(), (spec.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int error = errno;
    std::string what = strerror(error);
    if (!spec.read_only && (error == EACCES || error == EROFS)) {
      absl::StrAppend(&what, " (cannot open it for writing; add readonly=on for a read-only disk)");
    }
    return absl::InvalidArgumentError(
        absl::StrCat(DiskFlagName(spec.type), " id=", spec.id, ": image ", spec.path, ": ", what));
  }
  struct stat info {};
  int result = fstat(fd, &info);
  close(fd);
  if (result != 0 || !(S_ISREG(info.st_mode) || S_ISBLK(info.st_mode))) {
    return absl::InvalidArgumentError(absl::StrCat(DiskFlagName(spec.type), " id=", spec.id,
                                                   ": image ", spec.path,
                                                   " is not a regular file or block device"));
  }
  return absl::OkStatus();
}

// Checks the --iothread ids together: each valid, no duplicates, at most
// kMaxIoThreads.
absl::Status ValidateIoThreadIds(const std::vector<std::string>& iothreads) {
  if (iothreads.size() > kMaxIoThreads) {
    return absl::InvalidArgumentError(absl::StrCat("--iothread given ", iothreads.size(),
                                                   " times; kvmini runs at most ", kMaxIoThreads,
                                                   " IOThreads"));
  }
  std::set<std::string> seen;
  for (const std::string& id : iothreads) {
    if (!IsValidId(id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--iothread ", id, ": not a valid id (1-", kMaxIdBytes,
                       " letters, digits, '-', '_' or '.', starting with a letter)"));
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat("--iothread ", id, ": given twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view DiskFlagName(DiskType type) {
  return type == DiskType::kBlk ? "--blk" : "--scsi";
}

absl::string_view DiskTypeName(DiskType type) {
  return type == DiskType::kBlk ? "virtio-blk" : "virtio-scsi";
}

bool IsValidId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes || !absl::ascii_isalpha(id.front())) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      return false;
    }
  }
  return true;
}

absl::StatusOr<DiskSpec> ParseDiskSpec(DiskType type, absl::string_view text) {
  DiskSpec spec;
  spec.type = type;
  auto mistake = [&](ListMistake kind, absl::string_view item_or_key) {
    if (kind == ListMistake::kEmptyItem) {
      return OptionError(type, text, "empty option (a stray comma?)");
    }
    if (kind == ListMistake::kNotKeyValue) {
      return OptionError(type, text, absl::StrCat("'", item_or_key, "' is not KEY=VALUE"));
    }
    return OptionError(type, text, absl::StrCat("key '", item_or_key, "' given twice"));
  };
  absl::Status status =
      ForEachKeyValue(text, mistake, [&](absl::string_view key, absl::string_view value) {
        if (!IsKnownKey(key)) {
          return OptionError(
              type, text,
              absl::StrCat("unknown key '", key, "' (keys: ", absl::StrJoin(kKeys, ", "), ")"));
        }
        if (value.empty()) return OptionError(type, text, absl::StrCat(key, "= has no value"));
        if (absl::Status applied = ApplyOption(spec, key, value); !applied.ok()) {
          return OptionError(type, text, applied.message());
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  if (spec.path.empty()) {
    return OptionError(type, text, "path=IMAGE is missing (the disk image to use)");
  }
  return spec;
}

absl::StatusOr<IoThreadSpec> ParseIoThreadSpec(absl::string_view text) {
  IoThreadSpec spec;
  if (text.find('=') == absl::string_view::npos) {
    spec.id = std::string(text);  // the short form: just the id
    return spec;
  }
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("--iothread ", text, ": ", what));
  };
  auto mistake = [&](ListMistake kind, absl::string_view item_or_key) {
    if (kind == ListMistake::kKeyGivenTwice) {
      return error(absl::StrCat(item_or_key, " given twice"));
    }
    // An empty item is just one more item that is not KEY=VALUE.
    return error(absl::StrCat("'", item_or_key, "' is not KEY=VALUE (keys: id, poll-max-ns)"));
  };
  absl::Status status =
      ForEachKeyValue(text, mistake, [&](absl::string_view key, absl::string_view value) {
        if (key == "id") {
          spec.id = std::string(value);
        } else if (key == "poll-max-ns") {
          int64_t nanoseconds = 0;
          if (value.empty() || !absl::ascii_isdigit(static_cast<unsigned char>(value.front())) ||
              !absl::SimpleAtoi(value, &nanoseconds) || nanoseconds > kMaxPollMaxNs) {
            return error(absl::StrCat("poll-max-ns=", value, " is not a number of nanoseconds "
                                      "from 0 (polling off) to ", kMaxPollMaxNs));
          }
          spec.poll_max_ns = nanoseconds;
        } else {
          return error(absl::StrCat("unknown key '", key, "' (keys: id, poll-max-ns)"));
        }
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  if (spec.id.empty()) return error("id=ID is missing (the name disks use in iothread=ID)");
  return spec;
}

absl::StatusOr<std::vector<IoThreadSpec>> ValidateIoThreads(
    const std::vector<std::string>& iothreads) {
  std::vector<IoThreadSpec> specs;
  std::vector<std::string> ids;
  for (const std::string& text : iothreads) {
    absl::StatusOr<IoThreadSpec> spec = ParseIoThreadSpec(text);
    if (!spec.ok()) return spec.status();
    ids.push_back(spec->id);
    specs.push_back(std::move(*spec));
  }
  if (absl::Status status = ValidateIoThreadIds(ids); !status.ok()) return status;
  return specs;
}

absl::StatusOr<std::vector<DiskSpec>> ValidateDisks(const std::vector<std::string>& blk,
                                                    const std::vector<std::string>& scsi,
                                                    const std::vector<IoThreadSpec>& iothreads,
                                                    size_t max_disks) {
  std::vector<DiskSpec> disks;
  std::map<std::string, std::string> owner_by_id;  // id -> the option that set it
  for (auto [type, values] : {std::pair{DiskType::kBlk, &blk}, std::pair{DiskType::kScsi, &scsi}}) {
    for (size_t i = 0; i < values->size(); ++i) {
      absl::StatusOr<DiskSpec> spec = ParseDiskSpec(type, (*values)[i]);
      if (!spec.ok()) return spec.status();
      if (spec->id.empty()) {
        spec->id = absl::StrCat(type == DiskType::kBlk ? "blk" : "scsi", i);
      }
      std::string option = absl::StrCat(DiskFlagName(type), " ", (*values)[i]);
      auto [existing, inserted] = owner_by_id.emplace(spec->id, option);
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(option, ": duplicate disk id '", spec->id,
                                                       "' (also used by ", existing->second, ")"));
      }
      auto named = [&](const IoThreadSpec& iothread) { return iothread.id == spec->iothread; };
      if (!spec->iothread.empty() &&
          std::find_if(iothreads.begin(), iothreads.end(), named) == iothreads.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(option, ": unknown iothread '", spec->iothread,
                         "' (create it with --iothread ", spec->iothread, ")"));
      }
      disks.push_back(std::move(*spec));
    }
  }
  if (disks.size() > max_disks) {
    return absl::InvalidArgumentError(absl::StrCat(disks.size(),
                                                   " disks requested (--blk and --scsi); kvmini "
                                                   "has ",
                                                   max_disks, " virtio-mmio slots"));
  }
  for (const DiskSpec& spec : disks) {
    if (absl::Status status = CheckImage(spec); !status.ok()) return status;
  }
  return disks;
}

}  // namespace kvmini::vmm
