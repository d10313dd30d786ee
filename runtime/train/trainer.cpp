#include "runtime/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <memory>
#include <ostream>
#include <sstream>
#include <vector>

#include "comm/communicator.h"
#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/device.h"
#include "kernels/gemm.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/peft_export.h"
#include "runtime/data/batch_loader.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/transformer.h"
#include "runtime/rng.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/metrics.h"

namespace peftrun {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Token-level arrays of one micro-batch, allocated once.
struct BatchBuffers {
  std::vector<std::int32_t> inputs, targets, positions;
  explicit BatchBuffers(std::size_t n) : inputs(n), targets(n), positions(n) {}
  Batch view(int batch, int seq_len) const {
    return Batch{batch, seq_len, inputs.data(), targets.data(), positions.data(), nullptr};
  }
};

std::size_t count_targets(const std::vector<std::int32_t>& targets, std::size_t n) {
  return static_cast<std::size_t>(std::count_if(targets.begin(), targets.begin() + n,
                                                [](int t) { return t != cpu::kIgnoreIndex; }));
}

// Mean token loss over the held-out split (at most data.eval_batches micro-batches).
double evaluate(Transformer<float>& model, const BatchLoader& eval_data, const Config& cfg,
                BatchBuffers& buf, const std::vector<float>& params, Communicator& comm) {
  const int B = cfg.train.micro_batch_size, T = cfg.data.seq_len;
  const int batches = std::min(cfg.data.eval_batches, eval_data.num_eval_batches(B));
  double sums[2] = {0, 0};  // loss sum, token count
  for (int i = 0; i < batches; ++i) {
    eval_data.fill_eval_batch(i, B, buf.inputs.data(), buf.targets.data(), buf.positions.data());
    sums[0] += model.eval_micro_batch(buf.view(B, T), params.data());
    sums[1] += double(count_targets(buf.targets, std::size_t(B) * T));
  }
  comm.all_reduce_sum(sums, 2);
  return sums[1] > 0 ? sums[0] / sums[1] : std::numeric_limits<double>::quiet_NaN();
}

std::string format_duration(double s) {
  std::ostringstream o;
  const int total = static_cast<int>(s + 0.5);
  if (total >= 3600) o << total / 3600 << "h";
  if (total >= 60)
    o << std::setw(total >= 3600 ? 2 : 1) << std::setfill('0') << (total / 60) % 60 << "m";
  o << std::setw(total >= 60 ? 2 : 1) << std::setfill('0') << total % 60 << "s";
  return o.str();
}

// Adapter-only snapshot `checkpoint-STEP/` (full trainer state arrives with the checkpoint
// issue): written to a temporary folder and renamed into place, then old ones pruned.
void write_snapshot(const Config& cfg, const AdapterLayout& layout, const float* params, int step,
                    std::ostream& log) {
  namespace fs = std::filesystem;
  const fs::path out = cfg.output_dir;
  const fs::path final_dir = out / ("checkpoint-" + std::to_string(step));
  const fs::path tmp_dir = out / (".tmp-checkpoint-" + std::to_string(step));
  fs::remove_all(tmp_dir);
  write_peft_adapter(tmp_dir.string(), cfg, layout, params);
  fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  // Prune only after the new snapshot is complete.
  std::vector<std::pair<int, fs::path>> existing;
  for (const auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind("checkpoint-", 0) == 0) {
      try {
        existing.emplace_back(std::stoi(name.substr(11)), e.path());
      } catch (const std::exception&) {
      }
    }
  }
  std::sort(existing.begin(), existing.end());
  for (std::size_t i = 0; i + cfg.checkpoint.keep_last < existing.size(); ++i) {
    fs::remove_all(existing[i].second);
  }
  log << "saved adapter snapshot " << final_dir.string() << "\n";
}

}  // namespace

TrainSummary run_training(const Config& cfg, const TrainOptions& options, std::ostream& log) {
  const auto t_start = Clock::now();
  // The CUDA backend's ops arrive with their own issue; until then 'auto' resolves to the CPU
  // (saying why) and an explicit 'cuda' is refused rather than silently run on the CPU.
  const DeviceInventory devices = query_devices();
  if (cfg.runtime.device == DeviceKind::kCuda) {
    throw std::runtime_error(
        "runtime.device: 'cuda' requested, but the CUDA training backend is not implemented yet "
        "(" +
        std::to_string(devices.cuda_devices) +
        " CUDA device(s) visible); use 'cpu' or "
        "'auto'");
  }
  const std::string device_note = devices.cuda_devices > 0
                                      ? "cpu (CUDA training backend not implemented yet)"
                                      : "cpu (" + devices.note + ")";
  if (!cfg.model.path.empty()) {
    throw std::runtime_error("model.path: loading HF checkpoints is not implemented yet ('" +
                             cfg.model.path + "'); leave it empty for a random base");
  }
  if (cfg.adapter.type != AdapterType::kLora) {
    throw std::runtime_error(std::string("adapter.type: '") + to_string(cfg.adapter.type) +
                             "' is not implemented yet; only 'lora' trains today");
  }
  cpu::set_blas_threads(cfg.runtime.threads);
  auto comm = make_local_communicator();

  const int B = cfg.train.micro_batch_size, T = cfg.data.seq_len, accum = cfg.train.grad_accum;
  const std::size_t tokens_per_micro = std::size_t(B) * T;

  // Data first: a bad file fails before any memory is committed to the model.
  BatchLoader train_data(TokenFile::load(cfg.data.train), T, cfg.train.seed);
  check_vocab_fits(train_data.file(), cfg.model.vocab_size);
  std::unique_ptr<BatchLoader> eval_data;
  if (!cfg.data.eval.empty()) {
    eval_data = std::make_unique<BatchLoader>(TokenFile::load(cfg.data.eval), T, cfg.train.seed);
    check_vocab_fits(eval_data->file(), cfg.model.vocab_size);
  }

  const BaseWeights base = BaseWeights::random(cfg.model, cfg.train.seed);
  const AdapterLayout layout = AdapterLayout::plan(cfg.model, cfg.adapter);
  const std::size_t P = layout.total();
  std::vector<float> params(P), grads(P), adam_m(P, 0.0f), adam_v(P, 0.0f);
  layout.init_params(params.data(), cfg.train.seed);
  Transformer<float> model(base, layout, cfg.adapter, B, T);
  BatchBuffers buf(tokens_per_micro);

  std::filesystem::create_directories(cfg.output_dir);
  MetricsWriter metrics(cfg.output_dir + "/metrics.jsonl");
  const bool tty = isatty(STDOUT_FILENO) != 0;

  std::size_t trainable = 0;
  for (const auto& t : layout.tensors()) trainable += t.numel();
  log << "peftrun " << PEFTRUN_VERSION << ": " << cfg.model.n_layers << " layers, dim "
      << cfg.model.dim << ", vocab " << cfg.model.vocab_size << "; adapter "
      << to_string(cfg.adapter.type) << " r=" << cfg.adapter.r << " on " << layout.modules().size()
      << " modules (" << trainable << " trainable parameters)\n"
      << "base " << base.bytes() / 1024 << " KiB fp16, activations "
      << model.activation_bytes() / 1024 << " KiB; device " << device_note << ", "
      << train_data.num_windows() << " training windows of " << T << " tokens; output "
      << cfg.output_dir << "\n";

  TrainSummary summary;
  summary.initial_eval_loss = std::numeric_limits<double>::quiet_NaN();
  summary.final_eval_loss = summary.initial_eval_loss;
  auto run_eval = [&](int step) {
    if (!eval_data) return;
    const double loss = evaluate(model, *eval_data, cfg, buf, params, *comm);
    metrics.write({{"step", step}, {"eval_loss", loss}});
    if (tty) log << "\n";
    log << "eval step " << step << ": eval_loss " << std::fixed << std::setprecision(4) << loss
        << "\n"
        << std::defaultfloat;
    if (step == 0) summary.initial_eval_loss = loss;
    summary.final_eval_loss = loss;
  };
  run_eval(0);

  const std::uint64_t dropout_root = derive_key(cfg.train.seed, std::uint64_t(RngTag::kDropout));
  std::size_t tokens_done = 0;
  const auto t_train = Clock::now();
  for (int step = 0; step < cfg.train.steps; ++step) {
    const auto t_step = Clock::now();
    std::fill(grads.begin(), grads.end(), 0.0f);
    // Normalise by the token count of the whole global batch, so the result does not depend on
    // how it is split into micro-batches (or, later, ranks). Token files have no ignored targets,
    // so the count is known before any forward pass.
    double token_count = double(tokens_per_micro) * accum;
    comm->all_reduce_sum(&token_count, 1);
    const float grad_scale = static_cast<float>(1.0 / token_count);
    double loss_sum = 0;
    for (int micro = 0; micro < accum; ++micro) {
      const std::uint64_t sample = (std::uint64_t(step) * accum + micro) * B;
      train_data.fill_batch(sample, B, buf.inputs.data(), buf.targets.data(), buf.positions.data());
      loss_sum += model.train_micro_batch(buf.view(B, T), params.data(), grads.data(), grad_scale,
                                          derive_key(dropout_root, sample));
    }
    comm->all_reduce_sum(grads.data(), grads.size());
    comm->all_reduce_sum(&loss_sum, 1);
    const double loss = loss_sum / token_count;
    const double grad_norm = std::sqrt(cpu::sum_squares(grads.data(), grads.size()));
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      throw NonFiniteError("non-finite " + std::string(std::isfinite(loss) ? "gradient" : "loss") +
                           " at step " + std::to_string(step + 1) + " (loss " +
                           std::to_string(loss) + ", grad_norm " + std::to_string(grad_norm) +
                           "); lower optim.lr or set optim.max_grad_norm");
    }
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above max_norm.
    double clip = 1.0;
    if (cfg.optim.max_grad_norm > 0 && grad_norm > cfg.optim.max_grad_norm) {
      clip = cfg.optim.max_grad_norm / (grad_norm + 1e-6);
    }
    cpu::AdamWHyper h;
    h.lr = learning_rate(cfg.optim, cfg.train.steps, step);
    h.beta1 = cfg.optim.beta1;
    h.beta2 = cfg.optim.beta2;
    h.eps = cfg.optim.eps;
    h.weight_decay = cfg.optim.weight_decay;
    h.step = step + 1;
    h.grad_scale = clip;
    cpu::adamw_step(params.data(), grads.data(), adam_m.data(), adam_v.data(), P, h);
    if (options.debug) {
      for (const auto& t : layout.tensors()) {
        for (std::size_t i = 0; i < t.numel(); ++i) {
          if (!std::isfinite(params[t.offset + i])) {
            throw NonFiniteError("non-finite value in " + t.name + " after step " +
                                 std::to_string(step + 1));
          }
        }
      }
    }

    const double dt = seconds_since(t_step);
    tokens_done += std::size_t(token_count);
    const double tps = token_count / std::max(dt, 1e-9);
    const int done = step + 1;
    metrics.write({{"step", done},
                   {"loss", loss},
                   {"lr", h.lr},
                   {"grad_norm", grad_norm},
                   {"tokens_per_s", tps},
                   {"step_time_s", dt},
                   {"tokens", tokens_done}});
    summary.final_train_loss = loss;
    const double elapsed = seconds_since(t_train);
    if (tty) {
      const int width = 30, filled = width * done / cfg.train.steps;
      log << "\r[" << std::string(filled, '#') << std::string(width - filled, ' ') << "] " << done
          << "/" << cfg.train.steps << " loss " << std::fixed << std::setprecision(4) << loss
          << " lr " << std::scientific << std::setprecision(2) << h.lr << std::fixed << " "
          << std::setprecision(0) << tokens_done / elapsed << " tok/s eta "
          << format_duration(elapsed / done * (cfg.train.steps - done)) << "   "
          << std::defaultfloat << std::flush;
    } else if (done % cfg.train.log_every == 0 || done == cfg.train.steps || done == 1) {
      log << "step " << done << "/" << cfg.train.steps << " loss " << std::fixed
          << std::setprecision(4) << loss << " lr " << std::scientific << std::setprecision(3)
          << h.lr << " grad_norm " << std::fixed << std::setprecision(4) << grad_norm << " "
          << std::setprecision(0) << tps << " tok/s" << std::defaultfloat << "\n";
    }
    if (cfg.train.eval_every > 0 && done % cfg.train.eval_every == 0 && done != cfg.train.steps) {
      run_eval(done);
    }
    if (cfg.checkpoint.every_steps > 0 && done % cfg.checkpoint.every_steps == 0 &&
        done != cfg.train.steps) {
      write_snapshot(cfg, layout, params.data(), done, log);
    }
  }
  if (tty) log << "\n";
  run_eval(cfg.train.steps);
  write_peft_adapter(cfg.output_dir, cfg, layout, params.data());

  summary.steps = cfg.train.steps;
  summary.seconds = seconds_since(t_start);
  summary.tokens_per_s = double(tokens_done) / std::max(seconds_since(t_train), 1e-9);
  summary.adapter_dir = cfg.output_dir;
  return summary;
}

}  // namespace peftrun
