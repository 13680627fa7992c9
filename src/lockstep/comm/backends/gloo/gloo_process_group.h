// GlooProcessGroup: the `gloo` backend, over Debian's libgloo (tcp transport). The gloo
// context is connected as a full mesh through the lockstep store (GlooStore); every
// collective runs on the group's worker thread with gloo's own end-to-end timeout set to the
// time left before the operation's deadline. f16/bf16 reductions run in f32 (gloo's reduce
// function is ours, lockstep's reduce kernels); reduce_scatter is an all-reduce of a staged
// copy (gloo has no options-style reduce-scatter), so it moves `size()` times the data.
// abort() fails queued operations at once but cannot cut short a running collective (libgloo
// 0.5 has no way to), which ends at its timeout: supports(Capability::abort) is false.
//
// Interface selection: LOCKSTEP_SOCKET_IFNAME names the interface to bind; otherwise the
// loopback address when MASTER_ADDR is local or unset, else this host's name.
#pragma once

#include <gloo/rendezvous/context.h>
#include <gloo/transport/device.h>

#include <memory>

#include "lockstep/comm/engine.h"

namespace lockstep::comm::gloo_backend {

class GlooProcessGroup final : public engine::EngineGroup {
 public:
  // Rendezvous: every rank of the group calls this with the same store and group_name.
  GlooProcessGroup(store::Store& store, int rank, int world, Options options);
  ~GlooProcessGroup() override;

  bool supports(Capability c) const override;

 protected:
  void execute(const engine::Op& op, const OpInfo& info, Deadline deadline) override;
  std::unique_ptr<ProcessGroup> make_subgroup(const std::vector<int>& ranks,
                                              const std::string& name,
                                              Deadline deadline) override;
  void interrupt() override;
  std::unique_ptr<engine::Pending> post(const engine::Op& op, const OpInfo& info) override;

 private:
  void reduction(const engine::Op& op, const OpInfo& info, Deadline deadline);
  void data_movement(const engine::Op& op, const OpInfo& info, Deadline deadline);
  // gloo allreduce/reduce of `count` elements of `dtype` in place at `data`.
  void gloo_reduce(OpKind kind, void* data, size_t count, DType dtype, ReduceOp op, int root,
                   uint32_t tag, Millis timeout);

  store::Store& store_;
  std::shared_ptr<::gloo::transport::Device> device_;
  std::shared_ptr<::gloo::rendezvous::Context> context_;
  engine::WideBuffer wide_;  // f32 staging for f16/bf16 reductions
  std::unique_ptr<uint8_t[]> stage_;  // reduce_scatter staging, grown never shrunk
  size_t stage_cap_ = 0;
};

// The tcp device for this host (see the header comment for the interface choice).
std::shared_ptr<::gloo::transport::Device> make_tcp_device();

}  // namespace lockstep::comm::gloo_backend
