// lockstep_torch._C: the pybind11 glue. __init__.py imports torch.distributed first (it
// registers the c10d Store and ProcessGroup/Backend types this module's functions take and
// return), then registers the backend with torch.distributed.
#include <pybind11/chrono.h>
#include <pybind11/pybind11.h>
#include <torch/csrc/utils/pybind.h>

#include <string>

#include "process_group.h"

namespace py = pybind11;

namespace lockstep_torch {
namespace {

c10::intrusive_ptr<compat::BackendBase> create(const c10::intrusive_ptr<c10d::Store>& store,
                                               int rank, int size,
                                               std::chrono::milliseconds timeout,
                                               const std::string& group_name) {
  return c10::make_intrusive<LockstepProcessGroup>(store, rank, size, timeout, group_name);
}

std::string transport(const c10::intrusive_ptr<compat::BackendBase>& pg) {
  auto* mine = dynamic_cast<LockstepProcessGroup*>(pg.get());
  TORCH_CHECK(mine != nullptr, "lockstep_torch.transport: not a lockstep process group (backend ",
              pg->getBackendName(), ")");
  return mine->transport();
}

pybind11::dict stats(const c10::intrusive_ptr<compat::BackendBase>& pg) {
  auto* mine = dynamic_cast<LockstepProcessGroup*>(pg.get());
  TORCH_CHECK(mine != nullptr, "lockstep_torch.stats: not a lockstep process group (backend ",
              pg->getBackendName(), ")");
  const auto s = mine->stats();
  pybind11::dict d;
  d["ran_on_waiter"] = s.ran_on_waiter;
  d["completed_by_completer"] = s.completed_by_completer;
  d["futures_on_caller"] = s.futures_on_caller;
  d["share_votes"] = s.share_votes;
  d["moved_to_shared"] = s.moved_to_shared;
  return d;
}

bool quiesce(const c10::intrusive_ptr<compat::BackendBase>& pg, std::chrono::milliseconds timeout) {
  auto* mine = dynamic_cast<LockstepProcessGroup*>(pg.get());
  return mine == nullptr || mine->quiesce(timeout);
}

}  // namespace
}  // namespace lockstep_torch

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "lockstep's collectives as a torch.distributed backend (see lockstep_torch/__init__.py)";
  m.def("create_process_group", &lockstep_torch::create, py::arg("store"), py::arg("rank"),
        py::arg("size"), py::arg("timeout"), py::arg("group_name"),
        py::call_guard<py::gil_scoped_release>(),
        "A lockstep process group over `store` (collective: every rank of the group calls it).");
  m.def("quiesce", &lockstep_torch::quiesce, py::arg("group"), py::arg("timeout"),
        py::call_guard<py::gil_scoped_release>(),
        "Waits until the group's Works are complete and its completer thread is idle.");
  m.def("stats", &lockstep_torch::stats, py::arg("group"),
        "Thread hand-offs so far: {'ran_on_waiter': operations lockstep ran on the thread "
        "that waited for them, 'completed_by_completer': Works the completer thread completed, "
        "'futures_on_caller': whether DDP's bucket futures are completed by the training "
        "thread, 'share_votes': votes taken on moving an all-reduced tensor's storage into shared "
        "memory, 'moved_to_shared': storages moved}.");
  m.def("transport", &lockstep_torch::transport, py::arg("group"),
        "Which lockstep transport carries the group: 'shm', 'tcp' or 'none' (one rank).");
}
