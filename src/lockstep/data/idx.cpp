#include "lockstep/data/idx.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>

#include "lockstep/core/error.h"
#include "lockstep/data/file_reader.h"

namespace lockstep::data {

size_t idx_type_size(IdxType t) {
  switch (t) {
    case IdxType::u8:
    case IdxType::i8:
      return 1;
    case IdxType::i16:
      return 2;
    case IdxType::i32:
    case IdxType::f32:
      return 4;
    case IdxType::f64:
      return 8;
  }
  return 0;
}

uint64_t IdxArray::count() const {
  uint64_t n = 1;
  for (uint32_t d : dims) {
    n *= d;
  }
  return n;
}

namespace {

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

bool valid_type(uint8_t t) {
  return t == 0x08 || t == 0x09 || t == 0x0B || t == 0x0C || t == 0x0D || t == 0x0E;
}

std::string dims_text(const std::vector<uint32_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    s += (i ? "x" : "") + std::to_string(dims[i]);
  }
  return s;
}

// Copies big-endian elements into host order.
void copy_elements(const uint8_t* src, size_t count, size_t elem, uint8_t* dst) {
  if (count == 0) {
    return;  // dst may be null (found by idx_fuzz)
  }
  if (elem == 1 || std::endian::native == std::endian::big) {
    std::memcpy(dst, src, count * elem);
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    for (size_t b = 0; b < elem; ++b) {
      dst[i * elem + b] = src[i * elem + (elem - 1 - b)];
    }
  }
}

constexpr const char* kRedownload = "; the file is corrupt or not an IDX file, re-download it";

}  // namespace

// Phases: magic (4 bytes) -> dimension sizes -> the payload size they declare, saturated
// instead of overflowing (a zero dimension makes an empty, valid array whatever the others say).
IdxHeader parse_idx_header(std::span<const uint8_t> b, const std::string& name) {
  if (b.size() < 4) {
    LOCKSTEP_THROW(DataError, name, ": truncated IDX header: file is ", b.size(),
                   " bytes, the magic number alone needs 4", kRedownload);
  }
  const uint32_t magic = read_be32(b.data());
  if (b[0] != 0 || b[1] != 0 || !valid_type(b[2]) || b[3] == 0 || b[3] > kIdxMaxDims) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", magic);
    LOCKSTEP_THROW(DataError, name, ": bad IDX magic number ", hex,
                   " at offset 0 (expected 0x0000TTNN with type TT in 08,09,0B,0C,0D,0E and 1..",
                   kIdxMaxDims, " dimensions NN)",
                   is_gzip(b) ? "; the data is still gzip-compressed" : "", kRedownload);
  }
  IdxHeader h;
  h.type = static_cast<IdxType>(b[2]);
  const size_t ndims = b[3];
  h.header_bytes = 4 + 4 * ndims;
  if (b.size() < h.header_bytes) {
    LOCKSTEP_THROW(DataError, name, ": truncated IDX header: ", ndims, " dimensions need ",
                   h.header_bytes, " header bytes but the file has ", b.size(), kRedownload);
  }
  for (size_t i = 0; i < ndims; ++i) {
    h.dims.push_back(read_be32(b.data() + 4 + 4 * i));
  }
  const bool empty = std::find(h.dims.begin(), h.dims.end(), 0u) != h.dims.end();
  h.payload_bytes = empty ? 0 : idx_type_size(h.type);
  for (size_t i = 0; i < ndims && !empty; ++i) {
    const bool overflow = h.payload_bytes > UINT64_MAX / h.dims[i];
    h.payload_bytes = overflow ? UINT64_MAX : h.payload_bytes * h.dims[i];
  }
  return h;
}

IdxArray parse_idx(std::span<const uint8_t> b, const std::string& name) {
  IdxHeader h = parse_idx_header(b, name);
  const uint64_t payload = b.size() - h.header_bytes;
  if (h.payload_bytes > payload) {
    LOCKSTEP_THROW(DataError, name, ": truncated IDX data: the header says ", dims_text(h.dims),
                   " elements of ", idx_type_size(h.type), " bytes but only ", payload,
                   " bytes follow the ", h.header_bytes, "-byte header (file is ", b.size(),
                   " bytes)", kRedownload);
  }
  if (h.payload_bytes < payload) {
    LOCKSTEP_THROW(DataError, name, ": ", payload - h.payload_bytes,
                   " unexpected bytes after the IDX data at offset ",
                   h.header_bytes + h.payload_bytes, " (header says ", dims_text(h.dims), ")",
                   kRedownload);
  }
  IdxArray a;
  a.type = h.type;
  a.dims = std::move(h.dims);
  const size_t elem = idx_type_size(a.type);
  a.data.resize(static_cast<size_t>(h.payload_bytes));
  copy_elements(b.data() + h.header_bytes, a.data.size() / elem, elem, a.data.data());
  return a;
}

// A gzipped file is inflated only up to the size its header declares, plus one byte to tell
// trailing data: a small file that inflates to gigabytes of padding costs no more memory
// than an honest one (issue 18).
IdxArray load_idx(const std::string& path) {
  std::vector<uint8_t> raw = read_file(path);
  if (!is_gzip(raw)) {
    return parse_idx(raw, path);
  }
  const IdxHeader h = parse_idx_header(gunzip_prefix(raw, path, 4 + 4 * kIdxMaxDims), path);
  const uint64_t declared = h.header_bytes + std::min<uint64_t>(h.payload_bytes, kMaxDataFileBytes);
  const std::vector<uint8_t> bytes = gunzip_prefix(
      raw, path, static_cast<size_t>(std::min<uint64_t>(declared + 1, kMaxDataFileBytes)));
  if (bytes.size() > declared) {
    LOCKSTEP_THROW(DataError, path, ": gzip data inflates past the ", declared,
                   " bytes its IDX header declares (", dims_text(h.dims),
                   " elements); decompression stopped there", kRedownload);
  }
  return parse_idx(bytes, path);
}

namespace {

void expect_u8(const IdxArray& a, const std::string& name, const char* what) {
  if (a.type != IdxType::u8) {
    LOCKSTEP_THROW(DataError, name, ": ", what,
                   " must have element type 0x08 (unsigned byte), "
                   "got type byte ",
                   int(a.type), "; is this the right file?");
  }
}

}  // namespace

Dataset idx_to_dataset(IdxArray images, const std::string& images_name, const IdxArray& labels,
                       const std::string& labels_name, int num_classes) {
  expect_u8(images, images_name, "images");
  expect_u8(labels, labels_name, "labels");
  if (images.dims.size() != 3 && images.dims.size() != 4) {
    LOCKSTEP_THROW(DataError, images_name,
                   ": images must have 3 dimensions (N x H x W) or 4 "
                   "(N x C x H x W), got ",
                   images.dims.size(), " (", dims_text(images.dims),
                   "); is this a labels file? (images are '*-images-idx3-ubyte')");
  }
  if (labels.dims.size() != 1) {
    LOCKSTEP_THROW(DataError, labels_name, ": labels must have 1 dimension (N), got ",
                   labels.dims.size(), " (", dims_text(labels.dims),
                   "); is this an images file? (labels are '*-labels-idx1-ubyte')");
  }
  if (images.dims[0] != labels.dims[0]) {
    LOCKSTEP_THROW(DataError, images_name, " has ", images.dims[0], " images but ", labels_name,
                   " has ", labels.dims[0],
                   " labels; the two files come from different "
                   "datasets or splits (train vs t10k), use a matching pair");
  }
  std::vector<int64_t> shape(images.dims.begin() + 1, images.dims.end());
  if (shape.size() == 2) {
    shape.insert(shape.begin(), 1);
  }
  for (int64_t d : shape) {
    if (d == 0) {
      LOCKSTEP_THROW(DataError, images_name, ": image size ", dims_text(images.dims),
                     " has a zero dimension", kRedownload);
    }
  }
  std::vector<int32_t> targets(labels.data.begin(), labels.data.end());
  for (size_t i = 0; i < targets.size(); ++i) {
    if (targets[i] >= num_classes) {
      LOCKSTEP_THROW(DataError, labels_name, ": label ", targets[i], " of sample ", i,
                     " (byte offset ", 8 + i, ") is outside [0, ", num_classes,
                     "); the file is corrupt or has another number of classes");
    }
  }
  return Dataset::from_u8(images_name, FeatureKind::image_u8, std::move(shape),
                          std::move(images.data), std::move(targets), 1, num_classes);
}

Dataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         int num_classes) {
  return idx_to_dataset(load_idx(images_path), images_path, load_idx(labels_path), labels_path,
                        num_classes);
}

namespace {

// The first existing spelling of an MNIST file, or the list of what was tried.
std::optional<std::string> find_file(const std::string& dir, const std::string& prefix,
                                     const std::string& kind, std::string& tried) {
  for (const char* sep : {"-", "."}) {
    for (const char* ext : {"", ".gz"}) {
      const std::string p = str_cat(dir, "/", prefix, "-", kind, sep,
                                    kind == "images" ? "idx3" : "idx1", "-ubyte", ext);
      if (file_exists(p)) {
        return p;
      }
      tried += (tried.empty() ? "" : ", ") + p;
    }
  }
  return std::nullopt;
}

}  // namespace

Dataset load_mnist(const std::string& dir, Split split, int num_classes) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  std::string tried;
  auto images = find_file(dir, prefix, "images", tried);
  auto labels = find_file(dir, prefix, "labels", tried);
  if (!images || !labels) {
    LOCKSTEP_THROW(DataError, "no MNIST-format ", split_name(split), " split in '", dir,
                   "' (looked for ", tried,
                   "); pass the directory holding the IDX files, or "
                   "install Fashion-MNIST with 'apt-get install dataset-fashion-mnist'");
  }
  return load_idx_dataset(*images, *labels, num_classes);
}

std::optional<std::string> find_fashion_mnist_dir(const std::vector<std::string>& dirs) {
  std::vector<std::string> all = dirs;
  all.push_back(kDebianFashionMnistDir);
  for (const auto& d : all) {
    std::string tried;
    if (find_file(d, "train", "images", tried) && find_file(d, "train", "labels", tried)) {
      return d;
    }
  }
  return std::nullopt;
}

}  // namespace lockstep::data
