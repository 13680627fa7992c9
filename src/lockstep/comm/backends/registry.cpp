#include "lockstep/comm/backends/registry.h"

#include <dlfcn.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>

#include "lockstep/comm/backends/config.h"
#include "lockstep/comm/backends/plugin.h"
#include "lockstep/comm/process_group.h"
#include "lockstep/config.h"
#include "lockstep/core/error.h"

namespace lockstep::comm {
namespace {

// One row per backend on an existing engine: whether this build has it, and what a machine
// needs for it to load (Debian packages).
struct Known {
  const char* name;
  bool built;
  const char* needs;
};
constexpr Known kKnown[] = {
    {"mpi", LOCKSTEP_HAVE_MPI, "Open MPI (Debian: apt install libopenmpi-dev openmpi-bin)"},
    {"gloo", LOCKSTEP_HAVE_GLOO, "Gloo (Debian: apt install libgloo-dev)"},
    {"nccl", LOCKSTEP_HAVE_NCCL,
     "the CUDA runtime and NCCL (libcudart, libnccl: the CUDA toolkit with NCCL under "
     "/usr/local/cuda, or Debian's nvidia-cuda-toolkit and libnccl2)"},
};

const Known* find_known(const std::string& name) {
  for (const Known& k : kKnown)
    if (name == k.name) return &k;
  return nullptr;
}

// A static build calls the backend's entry point directly; the names of backends not built
// are never odr-used (discarded `if constexpr` branches), so they need no definition.
const BackendPlugin* linked_entry(const std::string& name) {
  if constexpr (!LOCKSTEP_BACKEND_PLUGINS) {
    if constexpr (LOCKSTEP_HAVE_MPI)
      if (name == "mpi") return lockstep_backend_mpi();
    if constexpr (LOCKSTEP_HAVE_GLOO)
      if (name == "gloo") return lockstep_backend_gloo();
    if constexpr (LOCKSTEP_HAVE_NCCL)
      if (name == "nccl") return lockstep_backend_nccl();
  }
  return nullptr;
}

const int kAnchor = 0;  // dladdr() of this names the file holding this code

std::string plugin_file(const std::string& name) {
  return "liblockstep_backend_" + name + ".so";
}

// One plugin, opened once (RTLD_LOCAL: its engine's symbols stay its own; it shares
// lockstep's core, store, comm and backends with the host through their shared libraries).
struct Loaded {
  const BackendPlugin* plugin = nullptr;
  std::string error;  // why it did not load ("" when it did)
};

// Why backend `k` did not load: each file tried with dlopen's words, what the backend needs
// (the Debian package) and where its plugin was looked for.
std::string load_error(const Known& k, const std::vector<std::string>& dirs,
                       const std::string& tried) {
  const char* env = std::getenv("LOCKSTEP_BACKEND_PATH");
  std::string where;
  for (const auto& d : dirs) where += (where.empty() ? "" : ", ") + d;
  return str_cat(
      "backend '", k.name, "' cannot be loaded on this machine:",
      dirs.empty() ? std::string("\n    no folder to look in") : tried, "\n  ", k.name, " needs ",
      k.needs, ", and lockstep's plugin ", plugin_file(k.name), ", looked for in ",
      env && *env
          ? str_cat("LOCKSTEP_BACKEND_PATH=", env,
                    " (unset it to use the plugins installed with lockstep)")
          : str_cat(where.empty() ? "(nowhere)" : where,
                    " (installed with lockstep; set LOCKSTEP_BACKEND_PATH to look elsewhere)"));
}

Loaded open_plugin(const Known& k) {
  Loaded out;
  const std::string file = plugin_file(k.name);
  const auto dirs = backend_plugin_dirs();
  std::string tried;
  for (const auto& dir : dirs) {
    const std::string path = (std::filesystem::path(dir) / file).string();
    void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char* e = ::dlerror();
      tried += str_cat("\n    ", e ? e : path + ": dlopen failed");
      continue;
    }
    const std::string entry = str_cat("lockstep_backend_", k.name);
    auto* fn = reinterpret_cast<const BackendPlugin* (*)()>(::dlsym(h, entry.c_str()));
    const BackendPlugin* p = fn ? fn() : nullptr;
    if (!p || p->abi != kBackendPluginAbi || std::string(p->version) != LOCKSTEP_VERSION) {
      tried += str_cat("\n    ", path, ": not a plugin of this lockstep (",
                       p ? str_cat("lockstep ", p->version, ", plugin ABI ", p->abi)
                         : str_cat("no ", entry, "()"),
                       "; this is lockstep ", LOCKSTEP_VERSION, ", ABI ", kBackendPluginAbi,
                       "): install lockstep and its plugins together");
      continue;  // left open: unloading a library whose code may have run is not safe
    }
    out.plugin = p;
    return out;
  }
  out.error = load_error(k, dirs, tried);
  return out;
}

// Each backend is tried once per search path (a test may change LOCKSTEP_BACKEND_PATH).
const Loaded& load(const Known& k) {
  static std::mutex mu;
  static std::map<std::string, Loaded> loaded;
  std::string key = k.name;
  for (const auto& d : backend_plugin_dirs()) key += "\n" + d;
  std::lock_guard<std::mutex> lk(mu);
  auto it = loaded.find(key);
  if (it == loaded.end()) {
    Loaded l;
    if (const BackendPlugin* p = linked_entry(k.name))
      l.plugin = p;
    else
      l = open_plugin(k);
    it = loaded.emplace(key, std::move(l)).first;
  }
  return it->second;
}

const BackendPlugin& plugin_or_throw(const Known& k) {
  const Loaded& l = load(k);
  if (!l.plugin) LOCKSTEP_THROW(ConfigError, l.error);
  return *l.plugin;
}

}  // namespace

void register_builtin_backends() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const Known& k : kKnown) {
      if (!k.built) continue;
      ProcessGroup::register_backend(
          k.name, [&k](store::Store& store, int rank, int world, const Options& options) {
            return plugin_or_throw(k).make_group(store, rank, world, options);
          });
    }
  });
}

std::vector<std::string> built_backends() {
  std::vector<std::string> names{"native"};
  for (const Known& k : kKnown)
    if (k.built) names.push_back(k.name);
  return names;
}

std::vector<std::string> available_backends() {
  std::vector<std::string> names{"native"};
  for (const Known& k : kKnown)
    if (k.built && load(k).plugin) names.push_back(k.name);
  return names;
}

std::vector<std::string> backend_plugin_dirs() {
  std::vector<std::string> dirs;
  if constexpr (!LOCKSTEP_BACKEND_PLUGINS) return dirs;
  if (const char* env = std::getenv("LOCKSTEP_BACKEND_PATH"); env && *env) {
    std::string s = env;
    for (size_t start = 0; start <= s.size();) {
      size_t end = std::min(s.find(':', start), s.size());
      if (end > start) dirs.push_back(s.substr(start, end - start));
      start = end + 1;
    }
    return dirs;
  }
  Dl_info info{};
  if (::dladdr(&kAnchor, &info) && info.dli_fname)
    dirs.push_back((std::filesystem::path(info.dli_fname).parent_path() / "lockstep")
                       .lexically_normal()
                       .string());
  return dirs;
}

std::string backends_summary() {
  std::string s = "backends:", missing, lines;
  for (const auto& b : available_backends()) s += " " + b;
  for (const Known& k : kKnown) {
    if (!k.built)
      missing += missing.empty() ? k.name : std::string(" ") + k.name;
    else if (const Loaded& l = load(k); !l.plugin)
      lines += "\n  " + l.error;
  }
  if (!missing.empty()) s += " (not built: " + missing + ")";
  if constexpr (LOCKSTEP_BACKEND_PLUGINS) {
    std::string dirs;
    for (const auto& d : backend_plugin_dirs()) dirs += (dirs.empty() ? "" : ":") + d;
    s += "\nbackend plugins from: " + (dirs.empty() ? std::string("(nowhere)") : dirs);
  }
  return s + lines;
}

std::string backend_unavailable_reason(const std::string& backend, int world) {
  if (backend == "native") return "";
  const Known* k = find_known(backend);
  if (!k || !k->built)
    return "backend '" + backend + "' is not built in (" + backends_summary() + ")";
  const Loaded& l = load(*k);
  if (!l.plugin) return l.error;
  return l.plugin->unavailable_reason(world);
}

}  // namespace lockstep::comm
