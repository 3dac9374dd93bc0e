// The catalogue of methods: how each is built from a config and how
// GetCapabilities describes it. Adding a method means one entry here.
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/methods/binarize.h"
#include "server/methods/gptq.h"
#include "server/methods/magnitude.h"
#include "server/methods/method.h"
#include "server/methods/nm.h"
#include "server/methods/quant_grid.h"
#include "server/methods/rtn.h"
#include "server/methods/sparsegpt.h"
#include "server/methods/structured.h"
#include "server/methods/ternarize.h"
#include "server/methods/wanda.h"

namespace bonsai::methods {
namespace {

using Factory = std::function<absl::StatusOr<std::unique_ptr<Method>>(const MethodConfig&)>;

// The kind facts of method_config.h; each entry states its own.
struct Traits {
  bool prunes_whole_channels = false;
  bool (*needs_sparsity)(const MethodConfig&) = [](const MethodConfig&) { return false; };
  int (*quantized_bits)(const MethodConfig&) = [](const MethodConfig&) { return 0; };
};

struct Entry {
  MethodDescription description;
  Factory factory;
  Traits traits = {};
};

bool Always(const MethodConfig&) { return true; }
// Wanda and SparseGPT take an n:m pattern instead of a sparsity.
bool UnlessNM(const MethodConfig& config) { return config.n == 0 && config.m == 0; }
int BitsOrFour(const MethodConfig& config) { return config.bits > 0 ? config.bits : 4; }

// N:M groups are at most 32 wide: hardware patterns are 2:4 and 4:8, and
// the group selection is quadratic in m.
constexpr int kMaxGroup = 32;

ParameterDescription SparsityParameter() {
  return {"sparsity", "double", "0", "fraction of weights set to zero, in [0, 1)"};
}
// Options are named by their path in CompressionSpec: each method's live in
// its own message (options.<method>), and the n:m pattern and the
// quantization grid are messages that several methods share, found under
// `prefix` (e.g. "options.sparsegpt.nm").
std::vector<ParameterDescription> NmParameters(const std::string& prefix, const char* use) {
  return {{absl::StrCat(prefix, ".n"), "uint32", "0",
           absl::StrCat("N:M pattern: keep n of every m", use)},
          {absl::StrCat(prefix, ".m"), "uint32", "0",
           "N:M group size along the reduction axis (Conv: input channels at one kernel "
           "position); at most 32"}};
}

std::vector<ParameterDescription> QuantParameters(const std::string& prefix,
                                                  const char* bits_default, const char* use) {
  return {{absl::StrCat(prefix, ".bits"), "uint32", bits_default,
           absl::StrCat("bits per weight: 2, 3, 4 or 8", use)},
          {absl::StrCat(prefix, ".group_size"), "optional uint32", "128",
           "weights per grid along the reduction axis (Conv: in*kh*kw in unfold order); 0: one "
           "grid per output channel; a size that does not divide the axis leaves a shorter last "
           "group"},
          {absl::StrCat(prefix, ".symmetric"), "bool", "false",
           "zero point fixed at 2^(bits-1), scale max|w| / (2^(bits-1) - 1); otherwise a "
           "min-max grid with an integer zero point, 0 always on it"}};
}
std::vector<ParameterDescription> SweepParameters(const std::string& prefix) {
  return {{absl::StrCat(prefix, ".block_size"), "uint32", "128", "columns per lazy-update block"},
          {absl::StrCat(prefix, ".dampening"), "float", "0.01",
           "added to the Hessian diagonal, as a fraction of its mean"}};
}
template <typename... Lists>
std::vector<ParameterDescription> Join(std::vector<ParameterDescription> first, Lists... rest) {
  (first.insert(first.end(), rest.begin(), rest.end()), ...);
  return first;
}

absl::Status CheckSparsity(const MethodConfig& config) {
  if (!(config.sparsity >= 0.0 && config.sparsity < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sparsity must be in [0, 1); got ", config.sparsity,
        ". Ask for e.g. 0.5 to zero half of the weights."));
  }
  return absl::OkStatus();
}

absl::Status CheckNM(const MethodConfig& config) {
  if (!(config.n > 0 && config.n < config.m && config.m <= kMaxGroup)) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.method, " needs 0 < n < m <= ", kMaxGroup, "; got n=", config.n,
        " m=", config.m, ". Ask for e.g. n=2 m=4 (2:4 sparsity)."));
  }
  return absl::OkStatus();
}

// Wanda and SparseGPT: unstructured with a sparsity, or N:M when n and m
// are both set (then the pattern fixes the sparsity).
absl::Status CheckSparsityOrNM(const MethodConfig& config) {
  if (config.n == 0 && config.m == 0) return CheckSparsity(config);
  return CheckNM(config);
}

template <typename M>
Factory Build(std::function<absl::Status(const MethodConfig&)> check) {
  return [check](const MethodConfig& config) -> absl::StatusOr<std::unique_ptr<Method>> {
    if (check) {
      if (auto s = check(config); !s.ok()) return s;
    }
    if constexpr (std::is_constructible_v<M, const MethodConfig&>) {
      return std::make_unique<M>(config);
    } else {
      return std::make_unique<M>();
    }
  };
}

// rtn, gptq and sparsegpt's joint mode; bits 0 is the method's default.
absl::Status CheckQuantOptions(const MethodConfig& config) {
  if (config.bits != 0 && config.bits != 2 && config.bits != 3 && config.bits != 4 &&
      config.bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.method, " bits must be 2, 3, 4 or 8; got ", config.bits,
        ". Ask for e.g. bits=4 (16 levels per group of group_size weights)."));
  }
  if (config.group_size < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.method, " group_size must be >= 0 (0: one grid per output channel); got ",
        config.group_size));
  }
  return absl::OkStatus();
}

// The options of the OBS sweep that gptq and sparsegpt share.
absl::Status CheckObsOptions(const MethodConfig& config) {
  if (config.block_size < 0 || config.block_size > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.method, " block_size must be in [1, 4096] (0 means ", kSparseGptDefaultBlock,
        "); got ", config.block_size));
  }
  if (!(std::isfinite(config.dampening) && config.dampening >= 0.0 && config.dampening <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        config.method, " dampening must be in [0, 1] as a fraction of the mean Hessian diagonal "
        "(0 means ", kSparseGptDefaultDampening, "); got ", config.dampening,
        ". Raise it (e.g. 0.1) if the Hessian is not positive definite."));
  }
  return absl::OkStatus();
}

absl::Status CheckSparseGpt(const MethodConfig& config) {
  if (auto s = CheckSparsityOrNM(config); !s.ok()) return s;
  if (auto s = CheckObsOptions(config); !s.ok()) return s;
  if (config.act_order) {
    return absl::InvalidArgumentError(
        "act_order is gptq's: sparsegpt visits columns in order, its masks being chosen block by "
        "block. Leave act_order unset, or quantize without pruning with method gptq.");
  }
  return CheckQuantOptions(config);
}

absl::Status CheckGptq(const MethodConfig& config) {
  if (auto s = CheckQuantOptions(config); !s.ok()) return s;
  return CheckObsOptions(config);
}

const std::vector<std::string>& AllFormats() {
  static const auto* formats = new std::vector<std::string>{"onnx", "safetensors"};
  return *formats;
}

const std::vector<Entry>& Entries() {
  static const auto* entries = new std::vector<Entry>{
      {{"magnitude",
        "Zero the weights with the smallest |w|, per tensor (scope layer) or "
        "with one threshold over all selected tensors (scope global).",
        {SparsityParameter(),
         {"scope", "Scope", "SCOPE_LAYER", "layer: each tensor to the target; global: one threshold"}},
        false,
        AllFormats()},
       Build<MagnitudeMethod>(CheckSparsity),
       {.needs_sparsity = Always}},
      {{"nm",
        "N:M semi-structured sparsity: in every group of m consecutive weights along the "
        "reduction axis keep the n largest |w| (ties: lower index). Conv groups are input "
        "channels at one kernel position; a channel tail that does not fill a group stays "
        "dense. Sparsity is n/m's, the sparsity field is ignored.",
        NmParameters("options.nm", ", 0 < n < m"),
        false,
        AllFormats()},
       Build<NMMethod>(CheckNM)},
      {{"structured",
        "Zero whole output channels with the smallest L1 or L2 norm: round(sparsity x "
        "channels) of them, ties by lower index, at least one channel kept. Mode physical "
        "(ONNX) also removes them from the graph.",
        {{"sparsity", "double", "0", "fraction of output channels removed, in [0, 1)"},
         {"options.structured.norm", "Norm", "NORM_L2", "channel norm that ranks channels"},
         {"options.structured.mode", "StructuredMode", "STRUCTURED_MODE_MASK",
          "mask: zero in place; physical: delete from the ONNX graph"}},
        false,
        AllFormats()},
       Build<StructuredMethod>(CheckSparsity),
       {.prunes_whole_channels = true, .needs_sparsity = Always}},
      {{"wanda",
        "Wanda (Sun et al. 2023): score |W_ij| * ||X_j||_2 from calibration inputs, prune "
        "the lowest scores of each output row (or keep n of m with options.wanda.nm). Needs "
        "calibration data; reports the reconstruction error on it.",
        Join({SparsityParameter()},
             NmParameters("options.wanda.nm", " (optional; instead of sparsity)")),
        true,
        AllFormats()},
       Build<WandaMethod>(CheckSparsityOrNM),
       {.needs_sparsity = UnlessNM}},
      {{"sparsegpt",
        "SparseGPT (Frantar & Alistarh 2023): one-shot pruning with optimal brain surgeon "
        "updates of the remaining weights from the calibration Hessian, in column blocks. "
        "Unstructured or N:M; with options.sparsegpt.quant the kept weights are quantized in "
        "the same pass (rtn's grids). Needs calibration data; reports the reconstruction error.",
        Join({SparsityParameter()}, SweepParameters("options.sparsegpt"),
             NmParameters("options.sparsegpt.nm", " (optional; instead of sparsity)"),
             QuantParameters("options.sparsegpt.quant", "0",
                             "; 0: prune only, else also quantize the kept weights in the same "
                             "pass")),
        true,
        AllFormats()},
       Build<SparseGptMethod>(CheckSparseGpt),
       // Quantizing alone (bits set, no sparsity) is a use of its own.
       {.needs_sparsity = [](const MethodConfig& c) { return UnlessNM(c) && c.bits == 0; },
        .quantized_bits = [](const MethodConfig& c) { return c.bits; }}},
      {{"binarize",
        "Binarization (BinaryConnect / XNOR-Net): W' = alpha * sign(W), alpha = mean|W| "
        "of each output channel, sign(0) = +1. Packs into one bit per weight.",
        {},
        false,
        AllFormats()},
       Build<BinarizeMethod>(nullptr)},
      {{"ternarize",
        "Ternarization (BitNet b1.58 absmean): W' = gamma * RoundClip(W / (gamma + 1e-5), "
        "-1, 1), gamma = mean|W| of the tensor or of each output channel.",
        {{"options.ternarize.per_channel", "bool", "false", "one scale per output channel"}},
        false,
        AllFormats()},
       Build<TernarizeMethod>(nullptr)},
      {{"rtn",
        "Round-to-nearest weight quantization: each group of group_size weights along the "
        "reduction axis gets a uniform grid over its range (0 included), and each weight "
        "becomes its nearest grid point, written back dequantized: scale * (q - zero). "
        "Calibration data is optional; with it the report gives the reconstruction error.",
        QuantParameters("options.rtn", "4", ""),
        false,
        AllFormats()},
       Build<RtnMethod>(CheckQuantOptions),
       {.quantized_bits = BitsOrFour}},
      {{"gptq",
        "GPTQ (Frantar et al. 2022): quantizes one column at a time onto rtn's grids and "
        "spreads each rounding error over the weights not yet quantized with optimal brain "
        "surgeon updates from the calibration Hessian, in column blocks. Needs calibration "
        "data; reports the reconstruction error.",
        Join(QuantParameters("options.gptq.quant", "4", ""), SweepParameters("options.gptq"),
             std::vector<ParameterDescription>{
                 {"options.gptq.act_order", "bool", "false",
                  "quantize columns in order of decreasing Hessian diagonal; the groups stay "
                  "those of the natural column order"}}),
        true,
        AllFormats()},
       Build<GptqMethod>(CheckGptq),
       {.quantized_bits = BitsOrFour}},
  };
  return *entries;
}

}  // namespace

const std::vector<MethodDescription>& DescribeMethods() {
  static const auto* descriptions = [] {
    auto* out = new std::vector<MethodDescription>;
    for (const Entry& entry : Entries()) out->push_back(entry.description);
    return out;
  }();
  return *descriptions;
}

namespace {

// The one lookup by name: null for a name this build does not offer.
const Entry* FindEntry(std::string_view name) {
  for (const Entry& entry : Entries()) {
    if (entry.description.name == name) return &entry;
  }
  return nullptr;
}

const Traits& TraitsOf(const MethodConfig& config) {
  static const Traits none;
  const Entry* entry = FindEntry(config.method);
  return entry != nullptr ? entry->traits : none;
}

}  // namespace

bool IsMethod(std::string_view name) { return FindEntry(name) != nullptr; }

bool PrunesWholeChannels(const MethodConfig& config) {
  return TraitsOf(config).prunes_whole_channels;
}
bool NeedsSparsity(const MethodConfig& config) { return TraitsOf(config).needs_sparsity(config); }
int QuantizedBits(const MethodConfig& config) { return TraitsOf(config).quantized_bits(config); }

absl::StatusOr<std::unique_ptr<Method>> CreateMethod(const MethodConfig& config) {
  if (const Entry* entry = FindEntry(config.method); entry != nullptr) {
    return entry->factory(config);
  }
  std::vector<std::string> known;
  for (const Entry& entry : Entries()) known.push_back(entry.description.name);
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown method '", config.method, "'; this server offers: ",
      absl::StrJoin(known, ", "), " (see GetCapabilities)"));
}

}  // namespace bonsai::methods
