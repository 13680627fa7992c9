#include "lockstep/comm/backends/nccl/nccl_process_group.h"

#include <cstring>
#include <thread>

#include "lockstep/comm/backends/factories.h"
#include "lockstep/comm/backends/nccl/nccl_check.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {

std::unique_ptr<ProcessGroup> make_nccl_group(store::Store& store, int rank, int world,
                                              const Options& options) {
  return std::make_unique<nccl::NcclProcessGroup>(
      store, rank, world, options, nccl::with_options(nccl::parse_nccl_config(), options));
}

int nccl_visible_devices() { return nccl::visible_device_count(); }

namespace nccl {

[[noreturn]] void throw_cuda_error(cudaError_t rc, const char* call, const std::string& context) {
  const std::string msg = str_cat(context, ": ", call, " failed: ", cudaGetErrorName(rc), " (",
                                  cudaGetErrorString(rc), ")");
  if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver) throw ConfigError(msg);
  if (rc == cudaErrorInvalidValue || rc == cudaErrorInvalidDevicePointer) throw InvalidArgument(msg);
  throw Error(msg);
}

[[noreturn]] void throw_nccl_error(ncclResult_t rc, const char* call, const std::string& context) {
  const std::string msg = str_cat(context, ": ", call, " failed: ", ncclGetErrorString(rc),
                                  " (NCCL error ", int(rc), ")");
  switch (rc) {
    case ncclInvalidArgument:
    case ncclInvalidUsage: throw InvalidArgument(msg);
    case ncclRemoteError:
    case ncclSystemError: throw PeerError(-1, call, msg);
    default: throw Error(msg);
  }
}

int visible_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

// --- RAII handles ---------------------------------------------------------------------------

CudaStream::CudaStream(int device) {
  CHECK_CUDA(cudaSetDevice(device), "nccl group: CUDA stream");
  CHECK_CUDA(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "nccl group: CUDA stream");
}
CudaStream::~CudaStream() {
  if (s_) cudaStreamDestroy(s_);
}

CudaEvent::CudaEvent() {
  CHECK_CUDA(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming), "nccl group: CUDA event");
}
CudaEvent::~CudaEvent() {
  if (e_) cudaEventDestroy(e_);
}

DeviceBuffer::~DeviceBuffer() {
  if (p_) cudaFree(p_);
}
void* DeviceBuffer::reserve(size_t bytes) {
  if (bytes > cap_) {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    cap_ = 0;
    CHECK_CUDA(cudaMalloc(&p_, bytes), str_cat("nccl staging buffer of ", bytes, " bytes"));
    cap_ = bytes;
  }
  return p_;
}

void Communicator::abort() {
  if (c_ && !aborted_) ncclCommAbort(c_);
  aborted_ = true;
}

Communicator::~Communicator() {
  if (!c_ || aborted_) return;
  // Flush (bounded), then destroy; a communicator that cannot finalize is aborted instead.
  ncclResult_t st = ncclCommFinalize(c_);
  const Deadline dl = Deadline::after(std::chrono::seconds(10));
  while (st == ncclInProgress && !dl.expired()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (ncclCommGetAsyncError(c_, &st) != ncclSuccess) break;
  }
  if (st == ncclSuccess)
    ncclCommDestroy(c_);
  else
    ncclCommAbort(c_);
}

// --- the group ------------------------------------------------------------------------------

namespace {

int local_rank_or(int rank) {
  for (const char* v : {"LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"})
    if (auto s = getenv_opt(v)) return parse_env_int(v, *s, 0, 1 << 20);
  return rank;  // thread-per-rank tests: one device per rank
}

// Only the group's thread drives NCCL and CUDA here: the engine's inline hand-off (a waiter
// running the operation itself) is not yet verified on a GPU, so nccl opts out of it.
constexpr engine::EngineTraits kNcclTraits{.run_inline = false, .lazy_wake = false};

}  // namespace

NcclProcessGroup::NcclProcessGroup(store::Store& store, int rank, int world, Options options,
                                   NcclConfig config)
    : EngineGroup("nccl", rank, world, std::move(options)), store_(store), config_(config) {
  const int n = visible_device_count();
  if (n == 0)
    LOCKSTEP_THROW(ConfigError, "nccl backend: cudaGetDeviceCount reports no CUDA device "
                   "(no GPU or no driver); use --backend native, gloo or mpi here");
  device_ = choose_device(config_, local_rank_or(rank), n);
  const std::string ctx = str_cat("nccl group '", this->options().group_name, "' creation (rank ",
                                  rank, " of ", world, ", device ", device_, ")");
  CHECK_CUDA(cudaSetDevice(device_), ctx);
  stream_ = std::make_unique<CudaStream>(device_);
  done_ = std::make_unique<CudaEvent>();
  comm_ = std::make_unique<Communicator>();
  set_single_rank_shortcut(!config_.single_rank_engine);
  set_traits(kNcclTraits);
  if (world > 1 || config_.single_rank_engine) {
    const Deadline dl = Deadline::after(this->options().timeout);
    const std::string prefix =
        engine::rendezvous_prefix(store_, "nccl/" + this->options().group_name + "/", world);
    auto id = exchange_unique_id(
        store_, prefix + "unique_id", rank, 0,
        [&] {
          ncclUniqueId uid;
          CHECK_NCCL(ncclGetUniqueId(&uid), ctx);
          return store::Bytes(reinterpret_cast<uint8_t*>(&uid),
                              reinterpret_cast<uint8_t*>(&uid) + sizeof(uid));
        },
        sizeof(ncclUniqueId), this->options().timeout);
    init_communicator(id, dl);
  }
  attach_store(store_);
  start_worker();
}

NcclProcessGroup::NcclProcessGroup(store::Store& store, int device,
                                   std::unique_ptr<Communicator> comm, int rank, int world,
                                   Options options, NcclConfig config)
    : EngineGroup("nccl", rank, world, std::move(options)),
      store_(store), config_(config), device_(device), comm_(std::move(comm)) {
  stream_ = std::make_unique<CudaStream>(device_);
  done_ = std::make_unique<CudaEvent>();
  set_single_rank_shortcut(!config_.single_rank_engine);
  set_traits(kNcclTraits);
  attach_store(store_);
  start_worker();
}

NcclProcessGroup::~NcclProcessGroup() {
  stop_worker();
  comm_.reset();  // before the stream and event it may still reference
}

void NcclProcessGroup::init_communicator(const store::Bytes& id, Deadline deadline) {
  const std::string ctx = str_cat("nccl group '", options().group_name, "' init (rank ", rank(),
                                  ", device ", device_, ")");
  ncclUniqueId uid;
  std::memcpy(&uid, id.data(), sizeof(uid));
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = config_.blocking ? 1 : 0;
  CHECK_NCCL(ncclCommInitRankConfig(comm_->out(), size(), uid, rank(), &cfg), ctx);
  wait_accepted(ctx, deadline);
}

bool NcclProcessGroup::supports(Capability c) const {
  switch (c) {
    case Capability::sub_groups:
    case Capability::abort:
    case Capability::send_recv: return true;  // untagged: matched in issue order
    case Capability::debug_checks: return true;  // EngineGroup's OpMonitor
    case Capability::shared_memory: return false;
    case Capability::device_memory: return true;  // host buffers are staged
  }
  return false;
}

void NcclProcessGroup::copy_local(void* dst, const void* src, size_t bytes) {
  if (dst == src || bytes == 0) return;
  const std::string ctx = str_cat("nccl local copy (rank ", rank(), ", group '",
                                  options().group_name, "', one rank)");
  CHECK_CUDA(cudaSetDevice(device_), ctx);
  // Runs on the issuing thread, inside its DeviceOrder if any: wait for the writer first
  // (polled, bounded by the group's timeout: a stuck stream must not hang the caller).
  if (const auto& ev = DeviceOrder::current())
    wait_event(static_cast<cudaEvent_t>(ev.get()), ctx, Deadline::after(options().timeout),
               "the caller's CUDA stream did not reach the operation's event within the "
               "group's timeout; is one of its kernels stuck?");
  CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), ctx);
}

std::unique_ptr<ProcessGroup> NcclProcessGroup::make_subgroup(const std::vector<int>& ranks,
                                                              const std::string& name,
                                                              Deadline deadline) {
  int index = -1;
  for (size_t i = 0; i < ranks.size(); ++i)
    if (ranks[i] == rank()) index = int(i);
  const std::string ctx = str_cat("nccl sub-group '", name, "' split (rank ", rank(), ")");
  CHECK_CUDA(cudaSetDevice(device_), ctx);
  auto sub = std::make_unique<Communicator>();
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = config_.blocking ? 1 : 0;
  CHECK_NCCL(ncclCommSplit(comm_->get(), index >= 0 ? 0 : NCCL_SPLIT_NOCOLOR, index, sub->out(),
                           &cfg),
             ctx);
  wait_accepted(ctx, deadline);  // the parent finishes the split
  if (index < 0) return nullptr;
  for (ncclResult_t st = ncclInProgress; st == ncclInProgress;) {
    CHECK_NCCL(ncclCommGetAsyncError(sub->get(), &st), ctx);
    if (st != ncclSuccess && st != ncclInProgress) throw_nccl_error(st, "ncclCommSplit", ctx);
    if (st == ncclInProgress && (deadline.expired() || aborted())) {
      sub->abort();
      LOCKSTEP_THROW(TimeoutError, ctx, ": ncclCommSplit did not complete in time");
    }
    if (st == ncclInProgress) std::this_thread::sleep_for(config_.poll_interval);
  }
  Options o = options();
  o.group_name = name;
  return std::make_unique<NcclProcessGroup>(store_, device_, std::move(sub), index,
                                            int(ranks.size()), o, config_);
}

}  // namespace nccl
}  // namespace lockstep::comm
