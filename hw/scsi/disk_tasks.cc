// The life cycle of ScsiDisk commands that wait for the backend, and task
// management (abort, reset). Exactly-once completion is enforced here: a
// task is unlinked and destroyed before its completion runs.
#include <utility>

#include "hw/scsi/disk_task.h"
#include "util/aio_wait.h"

namespace kvmini::hw::scsi {

ScsiDisk::Task& ScsiDisk::NewTask(ScsiRequest request, const RequestBuffers& buffers,
                                  const ParsedCdb& parsed, ScsiCompletion done) {
  auto* task = new Task(std::move(request), buffers, std::move(done), parsed);
  task->next = first_task_;
  if (first_task_) first_task_->previous = task;
  first_task_ = task;
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  return *task;
}

block::BlockBackend::Completion ScsiDisk::TrackOperation(Task& task) {
  ++task.pending;
  return [this, &task](int status) { OnOperationDone(task, status); };
}

void ScsiDisk::OnOperationDone(Task& task, int status) {
  if (status < 0 && task.error == 0) task.error = -status;
  if (--task.pending == 0) Advance(task);
}

void ScsiDisk::Advance(Task& task) {
  while (true) {
    if (task.aborted) return Finish(task, AbortedResult(task.buffers));
    if (task.error != 0) {
      return Finish(task, CheckConditionResult(task.request, task.buffers,
                                               SenseFromErrno(task.error, task.writing)));
    }
    if (task.failure)
      return Finish(task, CheckConditionResult(task.request, task.buffers, *task.failure));
    if (!task.next_step) break;
    auto step = std::move(task.next_step);
    task.next_step = nullptr;
    ++task.pending;
    step(task);
    if (--task.pending != 0) return;  // the last operation's completion advances
  }
  switch (task.direction) {
    case DataDirection::kIn:
      return Finish(task, DataInWrittenResult(task.buffers, task.transfer_bytes));
    case DataDirection::kOut:
      return Finish(task, GoodResult(task.buffers, task.transfer_bytes));
    case DataDirection::kNone:
      return Finish(task, GoodResult(task.buffers, 0));
  }
}

void ScsiDisk::Finish(Task& task, const ScsiResult& result) {
  if (task.previous) task.previous->next = task.next;
  if (task.next) task.next->previous = task.previous;
  if (first_task_ == &task) first_task_ = task.next;
  ScsiCompletion done = std::move(task.done);
  std::vector<std::shared_ptr<AbortWaiter>> waiters = std::move(task.waiters);
  delete &task;
  std::move(done)(result);
  // After the completion: a transport draining on in_flight() must not see
  // 0 before the response is out.
  in_flight_.fetch_sub(1, std::memory_order_release);
  util::AioWaitKick();  // a main-loop AioWaitWhileUnlocked may wait for in_flight()
  for (const auto& waiter : waiters) {
    if (--waiter->remaining == 0) std::move(waiter->done)();
  }
}

template <typename Predicate>
void ScsiDisk::AbortMatching(Predicate matching, absl::AnyInvocable<void(bool found) &&> done) {
  std::vector<Task*> matches;
  for (Task* task = first_task_; task != nullptr; task = task->next) {
    if (matching(*task)) matches.push_back(task);
  }
  if (matches.empty()) return std::move(done)(false);
  auto waiter = std::make_shared<AbortWaiter>(AbortWaiter{
      .remaining = matches.size(),
      .done = [done = std::move(done)]() mutable { std::move(done)(true); },
  });
  for (Task* task : matches) {
    task->aborted = true;
    task->waiters.push_back(waiter);
  }
}

void ScsiDisk::AbortTask(uint64_t tag, absl::AnyInvocable<void(bool found) &&> done) {
  AbortMatching([tag](const Task& task) { return task.request.tag == tag; }, std::move(done));
}

void ScsiDisk::AbortAllTasks(absl::AnyInvocable<void() &&> done) {
  AbortMatching([](const Task&) { return true; },
                [done = std::move(done)](bool) mutable { std::move(done)(); });
}

void ScsiDisk::Reset(absl::AnyInvocable<void() &&> done) {
  write_cache_ = default_write_cache_;
  unit_attention_ = sense::kPowerOnReset;
  AbortAllTasks(std::move(done));
}

bool ScsiDisk::HasTask(uint64_t tag) const {
  for (const Task* task = first_task_; task != nullptr; task = task->next) {
    if (task->request.tag == tag) return true;
  }
  return false;
}

}  // namespace kvmini::hw::scsi
