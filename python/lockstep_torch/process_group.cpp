#include "process_group.h"

#include <Python.h>

#include <ATen/core/ivalue.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <optional>
#include <string_view>
#include <utility>

#include "c10d_store.h"
#include "lockstep/comm/backends/nccl/nccl_options.h"
#include "lockstep/comm/backends/registry.h"
#include "lockstep/comm/native_process_group.h"
#include "lockstep/core/error.h"
#include "lockstep/torch/cuda_event.h"
#include "lockstep/torch/dtype.h"

namespace lockstep_torch {
namespace {

namespace comm = lockstep::comm;
using lockstep::torch::lockstep_dtype;
using c10d::OpType;
using lockstep::DType;
using Ms = std::chrono::milliseconds;

// The memory lockstep works on for one tensor: the tensor itself when it is a contiguous CPU
// tensor of a dtype lockstep handles, else a contiguous (and, for int8/int16/bool reductions,
// int32) copy that goes back into the tensor when the operation succeeds.
struct Staged {
  at::Tensor buf;
  DType dtype = DType::u8;
  bool copy_back = false;
};


void check_tensor(const at::Tensor& t, std::string_view op) {
  TORCH_CHECK(t.defined(), "lockstep ", op, ": undefined tensor");
  TORCH_CHECK((t.device().is_cpu() || t.device().is_cuda()) && t.layout() == at::kStrided,
              "lockstep ", op, ": only dense CPU and CUDA tensors are supported, got a tensor on ",
              t.device(), " with layout ", t.layout(), " (use backend gloo for these)");
}

size_t nbytes(const at::Tensor& t) {
  return size_t(t.numel()) * t.element_size();
}

// For operations that move bytes (broadcast, gathers, scatters, alltoall, send/recv): any dtype.
Staged bytes_buffer(const at::Tensor& t, std::string_view op) {
  check_tensor(t, op);
  if (t.is_contiguous()) return {t, DType::u8, false};
  return {t.contiguous(), DType::u8, true};
}

// For reductions: lockstep reduces f32 f64 f16 bf16 i32 i64 u8 itself; int8, int16 and bool
// go through int32 (exact for min and max; sum and product wrap as int8/int16 arithmetic does
// once cast back; bool sum/max is or, min/product is and).
Staged reduce_buffer(const at::Tensor& t, std::string_view op) {
  check_tensor(t, op);
  if (auto d = lockstep_dtype(t.scalar_type())) {
    if (t.is_contiguous()) return {t, *d, false};
    return {t.contiguous(), *d, true};
  }
  const auto s = t.scalar_type();
  TORCH_CHECK(s == at::kChar || s == at::kShort || s == at::kBool, "lockstep ", op, ": dtype ", s,
              " is not supported (float32, float64, float16, bfloat16, int8, int16, int32, int64, "
              "uint8, bool)");
  return {t.to(at::kInt).contiguous(), DType::i32, true};
}

// `t` as a tensor of the type `like` holds, contiguous (a copy only where needed).
at::Tensor as_reduce_input(const at::Tensor& t, const Staged& like) {
  if (t.scalar_type() == like.buf.scalar_type() && t.is_contiguous()) return t;
  return t.to(like.buf.scalar_type()).contiguous();
}

comm::ReduceOp lockstep_op(const c10d::ReduceOp& op, std::string_view what) {
  switch (op.op_) {
    case c10d::ReduceOp::SUM:
      return comm::ReduceOp::sum;
    case c10d::ReduceOp::AVG:
      return comm::ReduceOp::avg;
    case c10d::ReduceOp::PRODUCT:
      return comm::ReduceOp::prod;
    case c10d::ReduceOp::MIN:
      return comm::ReduceOp::min;
    case c10d::ReduceOp::MAX:
      return comm::ReduceOp::max;
    default:
      break;
  }
  TORCH_CHECK(false, "lockstep ", what, ": reduce op ", int(op.op_),
              " is not supported (SUM, AVG, PRODUCT, MIN, MAX are)");
}

const at::Tensor& single(const std::vector<at::Tensor>& tensors, std::string_view op) {
  TORCH_CHECK(tensors.size() == 1, "lockstep ", op, ": expects one tensor per call, got ",
              tensors.size());
  return tensors[0];
}

// The list of `world` tensors of a list-of-lists argument, each like `ref`.
const std::vector<at::Tensor>& per_rank(const std::vector<std::vector<at::Tensor>>& lists,
                                        const at::Tensor& ref, int world, std::string_view op) {
  TORCH_CHECK(lists.size() == 1, "lockstep ", op, ": expects one tensor list, got ", lists.size());
  const auto& l = lists[0];
  TORCH_CHECK(int(l.size()) == world, "lockstep ", op, ": the tensor list has ", l.size(),
              " tensors; it needs one per rank (", world, ")");
  for (const auto& t : l) {
    check_tensor(t, op);
    TORCH_CHECK(t.numel() == ref.numel() && t.scalar_type() == ref.scalar_type() &&
                    t.device() == ref.device(),
                "lockstep ", op, ": every tensor of the list needs ", ref.numel(), " elements of ",
                ref.scalar_type(), " on ", ref.device(), ", got ", t.numel(), " of ",
                t.scalar_type(), " on ", t.device());
  }
  return l;
}

// One contiguous tensor holding `parts` one after the other.
at::Tensor concat(const std::vector<at::Tensor>& parts) {
  std::vector<at::Tensor> flat;
  flat.reserve(parts.size());
  for (const auto& p : parts) flat.push_back(p.reshape({-1}));
  return at::cat(flat);
}

// Copies slice r of `flat` into parts[r], for each r.
void split_into(const at::Tensor& flat, const std::vector<at::Tensor>& parts) {
  int64_t offset = 0;
  for (const auto& p : parts) {
    p.copy_(flat.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
}

// Elements per row (per index of dimension 0) of a tensor that all_to_all_single cuts in rows.
int64_t row_elems(const at::Tensor& t) {
  int64_t n = 1;
  for (int64_t d = 1; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

// Whether `t` owns all of its storage, in memory the default CPU allocator gave it: the only
// memory share_if_agreed() may move, as nothing but the storage itself points into it (not
// numpy's, from_blob's or share_memory_()'s, which others reach by their own pointers).
bool movable(const at::Tensor& t) {
  if (!t.device().is_cpu() || !t.is_contiguous() || t.storage_offset() != 0) return false;
  const c10::Storage& st = t.storage();
  const c10::DataPtr& dp = st.data_ptr();
  if (st.nbytes() != nbytes(t) || dp.get() == nullptr || dp.get_context() != dp.get()) return false;
  const auto del = dp.get_deleter();
  return del == c10::GetCPUAllocator()->raw_deleter() ||
         del == c10::GetDefaultCPUAllocator()->raw_deleter();
}

// LOCKSTEP_TORCH_SHARE_BUFFERS=0 turns share_if_agreed() off (1, the default: on).
bool share_buffers_enabled() {
  const char* v = std::getenv("LOCKSTEP_TORCH_SHARE_BUFFERS");
  const std::string_view s = v ? v : "1";
  TORCH_CHECK(s == "1" || s == "0" || s.empty(), "LOCKSTEP_TORCH_SHARE_BUFFERS='", s,
              "': expected 1 or 0");
  return s != "0";
}

// Holds the buffer lockstep works on until the Work completes; a staged one is copied back
// into `user` once the operation succeeded.
void keep(LockstepWork& w, const at::Tensor& user, const Staged& s) {
  w.hold(s.buf);
  if (s.copy_back) w.then([user, buf = s.buf] { user.copy_(buf); });
}

}  // namespace

namespace {

std::vector<int64_t> rows_per_rank(const at::Tensor& t, const std::vector<int64_t>& sizes,
                                   int world, const char* which) {
  TORCH_CHECK(t.dim() >= 1, "lockstep all_to_all_single: the ", which,
              " tensor needs at least one dimension to be split in rows");
  const int64_t rows = t.size(0);
  if (sizes.empty()) {
    TORCH_CHECK(rows % world == 0, "lockstep all_to_all_single: without ", which,
                "_split_sizes the ", which, " tensor's ", rows, " rows must divide evenly among ",
                world, " ranks");
    return std::vector<int64_t>(size_t(world), rows / world);
  }
  int64_t sum = 0;
  for (int64_t n : sizes) {
    TORCH_CHECK(n >= 0, "lockstep all_to_all_single: negative ", which, "_split_sizes entry ", n);
    sum += n;
  }
  TORCH_CHECK(int(sizes.size()) == world && sum == rows, "lockstep all_to_all_single: ", which,
              "_split_sizes ", c10::IntArrayRef(sizes), " needs one entry per rank (", world,
              ") summing to the ", which, " tensor's ", rows, " rows");
  return sizes;
}

}  // namespace

AllToAllSplits::AllToAllSplits(const at::Tensor& input, const at::Tensor& output,
                               const std::vector<int64_t>& in_sizes,
                               const std::vector<int64_t>& out_sizes, int world)
    : in(rows_per_rank(input, in_sizes, world, "input")),
      out(rows_per_rank(output, out_sizes, world, "output")) {}

// --- LockstepProcessGroup: life cycle -------------------------------------------------------

LockstepProcessGroup::LockstepProcessGroup(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                           int size, Ms timeout, const std::string& group_name)
    : compat::BackendBase(rank, size),
      store_(std::make_unique<C10dStore>(store)),
      timeout_(timeout),
      group_name_(group_name) {
  comm::Options o;
  o.timeout = timeout;
  o.group_name = group_name;
  pg_ = comm::ProcessGroup::create("native", *store_, rank, size, o);
  if (size > 1 && pg_->supports(comm::Capability::shared_memory)) {
    // On only where every rank's LOCKSTEP_TORCH_SHARE_BUFFERS says so.
    int32_t on = share_buffers_enabled() ? 1 : 0;
    pg_->allreduce(&on, 1, DType::i32, comm::ReduceOp::min).wait();
    share_votes_left_ = on == 1 ? kShareVotes : 0;
  }
  queue_->set_futures_on_caller(futures_on_caller(pg_->spare_core()));
  completer_ = std::thread([q = queue_] { q->run(); });
  init();
}

LockstepProcessGroup::~LockstepProcessGroup() {
  queue_->stop();
  if (completer_.get_id() == std::this_thread::get_id()) {
    completer_.detach();  // the last reference went inside a future callback
  } else if (completer_.joinable()) {
    // Python may drop the group holding the GIL, which the completer needs to release a
    // Python callback: without the GIL while joining.
    PyThreadState* saved = Py_IsInitialized() && PyGILState_Check() ? PyEval_SaveThread() : nullptr;
    completer_.join();
    if (saved) PyEval_RestoreThread(saved);
  }
  cuda_pg_.reset();  // completes every lockstep operation still in flight
  pg_.reset();
  queue_->clear_failed();
}

std::string LockstepProcessGroup::transport() const {
  if (size_ == 1) return "none";
  return pg_->supports(comm::Capability::shared_memory) ? "shm" : "tcp";
}

LockstepProcessGroup::Stats LockstepProcessGroup::stats() const {
  Stats s;
  if (const auto* native = dynamic_cast<const comm::NativeProcessGroup*>(pg_.get()))
    s.ran_on_waiter = native->ran_on_waiter();
  s.completed_by_completer = queue_->completed_by_completer();
  s.futures_on_caller = queue_->futures_on_caller();
  std::lock_guard<std::mutex> order(issue_mu_);
  s.share_votes = share_votes_;
  s.moved_to_shared = moved_to_shared_;
  return s;
}

bool LockstepProcessGroup::quiesce(Ms timeout) {
  return queue_->quiesce(timeout);
}

Ms LockstepProcessGroup::pick(Ms op_timeout) const {
  return op_timeout == c10d::kUnsetTimeout ? timeout_ : op_timeout;
}

void LockstepProcessGroup::check_rank(int64_t r, const char* what, const char* op) const {
  TORCH_CHECK(r >= 0 && r < size_, "lockstep ", op, ": ", what, " ", r, " is not a rank of this ",
              size_, "-rank group");
}

// CUDA tensors go to lockstep's nccl backend, on the device of the first CUDA tensor (device
// pointers in place; NCCL needs one process per GPU, as PyTorch's own nccl backend does).
// The group is made by the first CUDA operation (collective: every rank issues it, as every
// rank makes the same calls in the same order). The tensors' current CUDA stream may still be
// writing them: an event recorded on it goes with the operation (comm::DeviceOrder), and
// lockstep's stream waits for it on the device, so issuing never blocks the caller (no
// stream or device synchronisation). lockstep's group completes a Work only once its own
// stream has finished, so whatever the caller queues after wait() sees the result.
LockstepProcessGroup::Target LockstepProcessGroup::on(const at::Tensor& t, const char* op,
                                                      const at::Tensor& other) {
  TORCH_CHECK(!other.defined() || other.device() == t.device(), "lockstep ", op,
              ": the tensors are on ", t.device(), " and ", other.device(),
              "; one operation's tensors must be on one device");
  if (!t.is_cuda()) return Target{*pg_, std::nullopt};
  if (!cuda_pg_) {
    comm::register_builtin_backends();
    comm::Options o;
    o.timeout = timeout_;
    o.group_name = group_name_ + "/cuda";
    auto nccl = std::make_shared<comm::nccl::NcclOptions>();
    nccl->device = t.device().index();
    o.backend = nccl;
    try {
      cuda_pg_ = comm::ProcessGroup::create("nccl", *store_, rank_, size_, o);
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false, "lockstep ", op, " on rank ", rank_,
          ": CUDA tensors run on lockstep's nccl backend, which could not start: ", e.what(),
          " (build lockstep where the CUDA toolkit and NCCL are found, or move the tensors to the "
          "CPU)");
    }
    cuda_device_ = t.device();
  }
  TORCH_CHECK(t.device() == cuda_device_, "lockstep ", op, " on rank ", rank_, ": a tensor on ",
              t.device(), ", but this group's CUDA operations run on ", cuda_device_,
              " (the device of its first CUDA tensor); use one GPU per process");
  return Target{*cuda_pg_, std::optional<comm::DeviceOrder>(
                               std::in_place, lockstep::torch::record_stream_event(t.device()))};
}

LockstepProcessGroup::WorkPtr LockstepProcessGroup::make_work(OpType type,
                                                              std::vector<at::Tensor> outputs,
                                                              Ms timeout) const {
  return c10::make_intrusive<LockstepWork>(rank_, type, std::move(outputs), timeout, queue_);
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::issue(
    WorkPtr work, const std::function<void(LockstepWork&)>& start) {
  c10::NoGradGuard no_grad;      // staging copies are plain data, not part of any graph
  std::vector<WorkPtr> retired;  // released here, after the locks, on the caller's thread
  {
    std::lock_guard<std::mutex> order(issue_mu_);
    start(*work);
    queue_->push(work, retired);
    ++issued_;
  }
  return work;
}

// DDP with gradient_as_bucket_view=True all-reduces the same flat bucket tensors every step.
// In ordinary memory each goes through lockstep's staging slots (a copy in and a copy out per
// rank); in memory from ProcessGroup::alloc_shared the all-reduce reads the peers' buckets in
// place. Moving a bucket there keeps every gradient view valid: views hold the storage, whose
// data pointer changes, never the pointer itself. But alloc_shared is collective, and which
// tensors are buckets is known to each rank alone, so the ranks vote, deciding whether to
// vote only from facts every rank shares: the size (at least kShareMinBytes, not settled
// below) and the count of votes so far (at most kShareVotes per group). Each rank says
// whether its tensor is movable() and was all-reduced before (DDP's buckets are, every step;
// fresh temporaries never), and whether this group already moved it; a 2-element MIN
// all-reduce decides for all: every rank's movable and seen moves it; every rank's already
// moved settles the size, which no later all-reduce votes on (so a moved bucket does not
// spend the votes: three per bucket size, then none). A vote waits for the operations in
// flight before it, costing those steps their overlap. DDP rebuilds its buckets after the
// first step, so the buckets of step 2 move at step 3 and settle at step 4. After the move,
// every rank's later operations on the bucket use the shared path; a rank passing ordinary
// memory where another passes its bucket is named on every rank by the shared-memory group
// (ShmGroup::check_places), never summed wrong.
void LockstepProcessGroup::share_if_agreed(const at::Tensor& buf) {
  const size_t size = nbytes(buf);
  if (share_votes_left_ == 0 || size < kShareMinBytes || buf.is_cuda() ||
      share_settled_.count(size))
    return;
  --share_votes_left_;
  ++share_votes_;
  const c10::Storage& st = buf.storage();
  auto in = [&](const std::vector<c10::weak_intrusive_ptr<c10::StorageImpl>>& list) {
    for (const auto& w : list)
      if (w._unsafe_get_target() == st.unsafeGetStorageImpl() && !w.expired()) return true;
    return false;
  };
  const bool seen = in(share_seen_);
  if (!seen) share_seen_.push_back(st.getWeakStorageImpl());
  int32_t vote[2] = {seen && movable(buf) ? 1 : 0, in(share_moved_) ? 1 : 0};
  pg_->allreduce(vote, 2, DType::i32, comm::ReduceOp::min).wait();
  if (vote[1]) share_settled_.insert(size);
  if (!vote[0]) return;
  const size_t bytes = st.nbytes();
  auto* mem = new std::shared_ptr<std::byte[]>(pg_->alloc_shared(bytes));
  std::memcpy(mem->get(), st.data(), bytes);
  st.set_data_ptr_noswap(c10::DataPtr(
      mem->get(), mem, [](void* m) { delete static_cast<std::shared_ptr<std::byte[]>*>(m); },
      c10::Device(c10::DeviceType::CPU)));
  share_moved_.push_back(st.getWeakStorageImpl());
  ++moved_to_shared_;
}

// --- collectives ----------------------------------------------------------------------------

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::allreduce(std::vector<at::Tensor>& tensors,
                                                               const c10d::AllreduceOptions& opts) {
  const at::Tensor& t = single(tensors, "allreduce");
  const comm::ReduceOp op = lockstep_op(opts.reduceOp, "allreduce");
  return issue(make_work(OpType::ALLREDUCE, {t}, pick(opts.timeout)), [&](LockstepWork& w) {
    Staged s = reduce_buffer(t, "allreduce");
    share_if_agreed(s.buf);
    w.add(on(s.buf, "allreduce")->allreduce(s.buf.data_ptr(), size_t(s.buf.numel()), s.dtype, op));
    keep(w, t, s);
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::allreduce_coalesced(
    std::vector<at::Tensor>& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  const comm::ReduceOp op = lockstep_op(opts.reduceOp, "allreduce_coalesced");
  return issue(make_work(OpType::ALLREDUCE_COALESCED, tensors, pick(opts.timeout)),
               [&](LockstepWork& w) {
                 for (const auto& t : tensors) {
                   Staged s = reduce_buffer(t, "allreduce_coalesced");
                   w.add(on(s.buf, "allreduce_coalesced")
                             ->allreduce(s.buf.data_ptr(), size_t(s.buf.numel()), s.dtype, op));
                   keep(w, t, s);
                 }
               });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::broadcast(std::vector<at::Tensor>& tensors,
                                                               const c10d::BroadcastOptions& opts) {
  const at::Tensor& t = single(tensors, "broadcast");
  check_rank(opts.rootRank, "root", "broadcast");
  return issue(make_work(OpType::BROADCAST, {t}, pick(opts.timeout)), [&](LockstepWork& w) {
    Staged s = bytes_buffer(t, "broadcast");
    w.add(on(s.buf, "broadcast")
              ->broadcast(s.buf.data_ptr(), nbytes(s.buf), DType::u8, int(opts.rootRank)));
    keep(w, t, s);
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::reduce(std::vector<at::Tensor>& tensors,
                                                            const c10d::ReduceOptions& opts) {
  const at::Tensor& t = single(tensors, "reduce");
  const comm::ReduceOp op = lockstep_op(opts.reduceOp, "reduce");
  check_rank(opts.rootRank, "root", "reduce");
  return issue(make_work(OpType::REDUCE, {t}, pick(opts.timeout)), [&](LockstepWork& w) {
    Staged s = reduce_buffer(t, "reduce");
    w.add(on(s.buf, "reduce")
              ->reduce(s.buf.data_ptr(), size_t(s.buf.numel()), s.dtype, op, int(opts.rootRank)));
    keep(w, t, s);
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::allgather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& opts) {
  const at::Tensor& in = single(inputs, "allgather");
  const auto& outs = per_rank(outputs, in, size_, "allgather");
  return issue(make_work(OpType::ALLGATHER, outs, pick(opts.timeout)), [&](LockstepWork& w) {
    Staged s = bytes_buffer(in, "allgather");
    at::Tensor flat = at::empty({int64_t(size_) * in.numel()}, in.options());
    w.add(on(s.buf, "allgather")
              ->allgather(s.buf.data_ptr(), flat.data_ptr(), nbytes(s.buf), DType::u8));
    w.hold(s.buf);
    w.hold(flat);
    w.then([flat, outs] { split_into(flat, outs); });
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::_allgather_base(
    at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& opts) {
  check_tensor(output, "all_gather_into_tensor");
  TORCH_CHECK(output.numel() == int64_t(size_) * input.numel() &&
                  output.scalar_type() == input.scalar_type(),
              "lockstep all_gather_into_tensor: the output needs ", size_, " x ", input.numel(),
              " elements of ", input.scalar_type(), ", got ", output.numel(), " of ",
              output.scalar_type());
  return issue(
      make_work(OpType::_ALLGATHER_BASE, {output}, pick(opts.timeout)), [&](LockstepWork& w) {
        Staged in = bytes_buffer(input, "all_gather_into_tensor");
        Staged out = bytes_buffer(output, "all_gather_into_tensor");
        w.add(on(in.buf, "all_gather_into_tensor", out.buf)
                  ->allgather(in.buf.data_ptr(), out.buf.data_ptr(), nbytes(in.buf), DType::u8));
        w.hold(in.buf);
        keep(w, output, out);
      });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::gather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts) {
  const at::Tensor& in = single(inputs, "gather");
  check_rank(opts.rootRank, "root", "gather");
  const int root = int(opts.rootRank);
  std::vector<at::Tensor> outs;
  if (rank_ == root) outs = per_rank(outputs, in, size_, "gather");
  return issue(make_work(OpType::GATHER, outs, pick(opts.timeout)), [&](LockstepWork& w) {
    Staged s = bytes_buffer(in, "gather");
    at::Tensor flat;
    if (rank_ == root) flat = at::empty({int64_t(size_) * in.numel()}, in.options());
    w.add(on(s.buf, "gather", flat)
              ->gather(s.buf.data_ptr(), flat.defined() ? flat.data_ptr() : nullptr, nbytes(s.buf),
                      DType::u8, root));
    w.hold(s.buf);
    if (flat.defined()) {
      w.hold(flat);
      w.then([flat, outs] { split_into(flat, outs); });
    }
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts) {
  const at::Tensor& out = single(outputs, "scatter");
  check_rank(opts.rootRank, "root", "scatter");
  const int root = int(opts.rootRank);
  std::vector<at::Tensor> ins;
  if (rank_ == root) ins = per_rank(inputs, out, size_, "scatter");
  return issue(make_work(OpType::SCATTER, {out}, pick(opts.timeout)), [&](LockstepWork& w) {
    Staged s = bytes_buffer(out, "scatter");
    at::Tensor flat;
    if (rank_ == root) flat = concat(ins);
    w.add(on(s.buf, "scatter", flat)
              ->scatter(flat.defined() ? flat.data_ptr() : nullptr, s.buf.data_ptr(), nbytes(s.buf),
                       DType::u8, root));
    if (flat.defined()) w.hold(flat);
    keep(w, out, s);
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::reduce_scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  const at::Tensor& out = single(outputs, "reduce_scatter");
  const comm::ReduceOp op = lockstep_op(opts.reduceOp, "reduce_scatter");
  const auto& ins = per_rank(inputs, out, size_, "reduce_scatter");
  return issue(make_work(OpType::REDUCE_SCATTER, {out}, pick(opts.timeout)), [&](LockstepWork& w) {
    Staged s = reduce_buffer(out, "reduce_scatter");
    at::Tensor flat = as_reduce_input(concat(ins), s);
    w.add(
        on(s.buf, "reduce_scatter", flat)
            ->reduce_scatter(flat.data_ptr(), s.buf.data_ptr(), size_t(s.buf.numel()), s.dtype,
                             op));
    w.hold(flat);
    keep(w, out, s);
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::_reduce_scatter_base(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  const comm::ReduceOp op = lockstep_op(opts.reduceOp, "reduce_scatter_tensor");
  check_tensor(input, "reduce_scatter_tensor");
  TORCH_CHECK(input.numel() == int64_t(size_) * output.numel() &&
                  output.scalar_type() == input.scalar_type(),
              "lockstep reduce_scatter_tensor: the input needs ", size_, " x ", output.numel(),
              " elements of ", output.scalar_type(), ", got ", input.numel(), " of ",
              input.scalar_type());
  return issue(make_work(OpType::_REDUCE_SCATTER_BASE, {output}, pick(opts.timeout)),
               [&](LockstepWork& w) {
                 Staged s = reduce_buffer(output, "reduce_scatter_tensor");
                 at::Tensor in = as_reduce_input(input, s);
                 w.add(on(s.buf, "reduce_scatter_tensor", in)
                           ->reduce_scatter(in.data_ptr(), s.buf.data_ptr(), size_t(s.buf.numel()),
                                           s.dtype, op));
                 w.hold(in);
                 keep(w, output, s);
               });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::alltoall_base(
    at::Tensor& output, at::Tensor& input, std::vector<int64_t>& output_split_sizes,
    std::vector<int64_t>& input_split_sizes, const c10d::AllToAllOptions& opts) {
  check_tensor(input, "all_to_all_single");
  check_tensor(output, "all_to_all_single");
  TORCH_CHECK(output.scalar_type() == input.scalar_type() && row_elems(output) == row_elems(input),
              "lockstep all_to_all_single: input and output need one dtype and the same row "
              "shape, got ",
              input.scalar_type(), " ", input.sizes(), " and ", output.scalar_type(), " ",
              output.sizes());
  if (!input_split_sizes.empty() || !output_split_sizes.empty()) {
    const AllToAllSplits splits(input, output, input_split_sizes, output_split_sizes, size_);
    return issue(make_work(OpType::ALLTOALL_BASE, {output}, pick(opts.timeout)),
                 [&](LockstepWork& w) { alltoall_uneven(w, input, output, splits, opts); });
  }
  TORCH_CHECK(nbytes(input) == nbytes(output) && nbytes(input) % size_t(size_) == 0,
              "lockstep all_to_all_single: without split sizes input and output need the same "
              "number of elements, divisible by the group size (",
              size_, "), got ", input.numel(), " and ", output.numel());
  return issue(make_work(OpType::ALLTOALL_BASE, {output}, pick(opts.timeout)),
               [&](LockstepWork& w) {
                 Staged in = bytes_buffer(input, "all_to_all_single");
                 Staged out = bytes_buffer(output, "all_to_all_single");
                 w.add(on(in.buf, "all_to_all_single", out.buf)
                           ->alltoall(in.buf.data_ptr(), out.buf.data_ptr(),
                                     nbytes(in.buf) / size_t(size_), DType::u8));
                 w.hold(in.buf);
                 keep(w, output, out);
               });
}

// Uneven splits: lockstep's alltoall moves equal pieces, so every piece is padded to the
// largest of the whole exchange, which each rank learns from one all-gather of every rank's
// split sizes (also checked there: what rank i sends to j is what j expects from i, on every
// rank alike, so all of them raise rather than one raising and the others hanging).
void LockstepProcessGroup::alltoall_uneven(LockstepWork& w, const at::Tensor& input,
                                           const at::Tensor& output, const AllToAllSplits& splits,
                                           const c10d::AllToAllOptions& opts) {
  const int64_t world = size_;
  at::Tensor mine = at::empty({2 * world}, at::kLong);
  std::copy(splits.in.begin(), splits.in.end(), mine.data_ptr<int64_t>());
  std::copy(splits.out.begin(), splits.out.end(), mine.data_ptr<int64_t>() + world);
  at::Tensor all = at::empty({world * 2 * world}, at::kLong);
  pg_->allgather(mine.data_ptr(), all.data_ptr(), size_t(2 * world), DType::i64)
      .wait(pick(opts.timeout));
  const int64_t* m = all.data_ptr<int64_t>();  // rank i: m[i*2W + j] sends, m[i*2W + W + j] expects
  int64_t widest = 0;
  for (int64_t i = 0; i < world; ++i)
    for (int64_t j = 0; j < world; ++j) {
      const int64_t sends = m[i * 2 * world + j], expects = m[j * 2 * world + world + i];
      TORCH_CHECK(sends == expects, "lockstep all_to_all_single: rank ", i, " sends ", sends,
                  " rows to rank ", j, ", whose output_split_sizes expect ", expects,
                  " (seen on rank ", rank_, "); the split sizes must match across ranks");
      widest = std::max(widest, sends);
    }
  const size_t row = size_t(row_elems(input)) * input.element_size();
  const size_t piece = size_t(widest) * row;
  at::Tensor src = input.contiguous().reshape({-1}).view(at::kByte);
  at::Tensor padded_in = at::empty({int64_t(piece) * world}, at::kByte);
  at::Tensor padded_out = at::empty({int64_t(piece) * world}, at::kByte);
  for (int64_t j = 0, off = 0; j < world; off += splits.in[j] * int64_t(row), ++j)
    padded_in.narrow(0, j * int64_t(piece), splits.in[j] * int64_t(row))
        .copy_(src.narrow(0, off, splits.in[j] * int64_t(row)));
  Staged out = bytes_buffer(output, "all_to_all_single");
  w.add(pg_->alltoall(padded_in.data_ptr(), padded_out.data_ptr(), piece, DType::u8));
  w.hold(padded_in);
  w.hold(padded_out);
  w.then([padded_out, dst = out.buf, piece, row, in_rows = splits.out] {
    at::Tensor flat = dst.reshape({-1}).view(at::kByte);
    for (size_t j = 0, off = 0; j < in_rows.size(); off += size_t(in_rows[j]) * row, ++j)
      flat.narrow(0, int64_t(off), in_rows[j] * int64_t(row))
          .copy_(padded_out.narrow(0, int64_t(j * piece), in_rows[j] * int64_t(row)));
  });
  keep(w, output, out);
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::alltoall(std::vector<at::Tensor>& outputs,
                                                              std::vector<at::Tensor>& inputs,
                                                              const c10d::AllToAllOptions& opts) {
  TORCH_CHECK(int(inputs.size()) == size_ && int(outputs.size()) == size_,
              "lockstep all_to_all: needs one input and one output tensor per rank (", size_, ")");
  bool even = true;
  for (const auto* list : {&inputs, &outputs})
    for (const auto& t : *list) {
      check_tensor(t, "all_to_all");
      TORCH_CHECK(t.scalar_type() == inputs[0].scalar_type(),
                  "lockstep all_to_all: every tensor needs one dtype, got ", t.scalar_type(),
                  " beside ", inputs[0].scalar_type());
      even = even && t.numel() == inputs[0].numel();
    }
  if (!even) {  // tensors of different sizes: flat, with one split per tensor (in elements)
    std::vector<int64_t> in_sizes, out_sizes;
    for (const auto& t : inputs) in_sizes.push_back(t.numel());
    for (const auto& t : outputs) out_sizes.push_back(t.numel());
    at::Tensor in = concat(inputs);
    at::Tensor flat =
        at::empty({std::accumulate(out_sizes.begin(), out_sizes.end(), int64_t(0))}, in.options());
    const AllToAllSplits splits(in, flat, in_sizes, out_sizes, size_);
    return issue(make_work(OpType::ALLTOALL, outputs, pick(opts.timeout)), [&](LockstepWork& w) {
      alltoall_uneven(w, in, flat, splits, opts);
      w.hold(in);
      w.then([flat, outs = outputs] { split_into(flat, outs); });
    });
  }
  return issue(make_work(OpType::ALLTOALL, outputs, pick(opts.timeout)), [&](LockstepWork& w) {
    at::Tensor in = concat(inputs);
    at::Tensor flat = at::empty_like(in);
    w.add(on(in, "all_to_all", flat)
              ->alltoall(in.data_ptr(), flat.data_ptr(), nbytes(in) / size_t(size_), DType::u8));
    w.hold(in);
    w.hold(flat);
    w.then([flat, outs = outputs] { split_into(flat, outs); });
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::send(std::vector<at::Tensor>& tensors, int dst,
                                                          int tag) {
  const at::Tensor& t = single(tensors, "send");
  check_rank(dst, "destination", "send");
  return issue(make_work(OpType::SEND, {t}, timeout_), [&](LockstepWork& w) {
    Staged s = bytes_buffer(t, "send");
    w.add(on(s.buf, "send")->send(s.buf.data_ptr(), nbytes(s.buf), DType::u8, dst, uint32_t(tag)));
    w.hold(s.buf);
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::recv(std::vector<at::Tensor>& tensors, int src,
                                                          int tag) {
  const at::Tensor& t = single(tensors, "recv");
  check_rank(src, "source", "recv");
  return issue(make_work(OpType::RECV, {t}, timeout_), [&](LockstepWork& w) {
    Staged s = bytes_buffer(t, "recv");
    w.add(on(s.buf, "recv")->recv(s.buf.data_ptr(), nbytes(s.buf), DType::u8, src, uint32_t(tag)));
    keep(w, t, s);
  });
}

c10::intrusive_ptr<c10d::Work> LockstepProcessGroup::barrier(const c10d::BarrierOptions& opts) {
  return issue(make_work(OpType::BARRIER, {}, pick(opts.timeout)),
               [&](LockstepWork& w) { w.add(pg_->barrier()); });
}

// A barrier whose failure names the rank that did not arrive (lockstep's errors do).
void LockstepProcessGroup::monitoredBarrier(const c10d::BarrierOptions& opts,
                                            bool /*wait_all_ranks*/) {
  barrier(opts)->wait(pick(opts.timeout));
}

}  // namespace lockstep_torch
