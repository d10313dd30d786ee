#include "runtime/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <vector>

#include "comm/communicator.h"
#include "kernels/adalora.h"
#include "kernels/adamw.h"
#include "kernels/cross_entropy.h"
#include "kernels/device.h"
#include "kernels/gemm.h"
#include "runtime/adapters/adalora_allocator.h"
#include "runtime/adapters/adalora_regulariser.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/peft_export.h"
#include "runtime/data/dataset_factory.h"
#include "runtime/model/base_weights.h"
#include "runtime/rng.h"
#include "runtime/train/checkpoint_commit.h"
#include "runtime/train/evaluator.h"
#include "runtime/train/grad_buckets.h"
#include "runtime/train/loss_scaling.h"
#include "runtime/train/lr_schedule.h"
#include "runtime/train/metrics.h"
#include "runtime/train/model_setup.h"
#include "runtime/train/resume_plan.h"
#include "runtime/train/train_state.h"
#include "runtime/train/train_state_io.h"
#include "runtime/train/training_backend.h"

namespace peftrun {

namespace {

using Clock = std::chrono::steady_clock;

// ", sliding window W in N of L layers" (", sliding window W" when every layer slides).
std::string sliding_window_text(const ModelConfig& m) {
  if (m.sliding_window <= 0) return "";
  std::string s = ", sliding window " + std::to_string(m.sliding_window);
  if (m.layer_types.empty()) return s;
  const auto n = std::count(m.layer_types.begin(), m.layer_types.end(), "sliding_attention");
  return s + " in " + std::to_string(n) + " of " + std::to_string(m.n_layers) + " layers";
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string format_duration(double s) {
  std::ostringstream o;
  const int total = static_cast<int>(s + 0.5);
  if (total >= 3600) o << total / 3600 << "h";
  if (total >= 60) {
    o << std::setw(total >= 3600 ? 2 : 1) << std::setfill('0') << (total / 60) % 60 << "m";
  }
  o << std::setw(total >= 60 ? 2 : 1) << std::setfill('0') << total % 60 << "s";
  return o.str();
}

struct StepStats {
  double loss = 0;      // what was optimised: mean CE (+ AdaLoRA's orthogonality term)
  double orth_reg = 0;  // AdaLoRA's weighted orthogonality term (0 otherwise)
  double grad_norm = 0, lr = 0, tokens = 0;
  bool skipped = false;  // fp16 loss scaling: non-finite gradients, the update was skipped
  double loss_scale = 1;
};

// The AdaLoRA mask is computed independently on every rank from the all-reduced gradients;
// prove after every step that all ranks hold the same one (a mismatch would silently train
// different models).
void check_same_mask_everywhere(const AdaLoraAllocator& allocator, Communicator& comm, int step) {
  const std::uint64_t mine = allocator.mask_checksum();
  std::vector<std::uint64_t> all(comm.world_size());
  comm.all_gather(&mine, all.data(), sizeof(mine));
  for (int r = 0; r < comm.world_size(); ++r) {
    if (all[r] != all[0]) {
      throw std::runtime_error("AdaLoRA mask differs between rank 0 and rank " + std::to_string(r) +
                               " after step " + std::to_string(step) + " (checksums " +
                               std::to_string(all[0]) + " vs " + std::to_string(all[r]) + ")");
    }
  }
}

// Human-readable progress: a redrawn bar on a terminal, else one line every log_every steps.
class ProgressLog {
 public:
  // first_step: where this process started (a resumed run), for the rate and the ETA.
  ProgressLog(std::ostream& log, int total_steps, int log_every, int first_step)
      : log_(log),
        total_(total_steps),
        every_(log_every),
        first_(first_step),
        tty_(isatty(STDOUT_FILENO) != 0) {}

  void step(int done, const StepStats& s, double step_seconds, double tokens_total,
            double elapsed) {
    if (tty_) {
      const int width = 30, filled = width * done / total_;
      // Formatted apart, so the log stream's own precision and flags are left as they were.
      std::ostringstream o;
      o << "\r[" << std::string(filled, '#') << std::string(width - filled, ' ') << "] " << done
        << "/" << total_ << " loss " << std::fixed << std::setprecision(4) << s.loss << " lr "
        << std::scientific << std::setprecision(2) << s.lr << std::fixed << " "
        << std::setprecision(0) << tokens_total / elapsed << " tok/s eta "
        << format_duration(elapsed / std::max(done - first_, 1) * (total_ - done)) << "   ";
      log_ << o.str() << std::flush;
      bar_open_ = true;
    } else if (done % every_ == 0 || done == total_ || done == 1) {
      std::ostringstream o;
      o << "step " << done << "/" << total_ << " loss " << std::fixed << std::setprecision(4)
        << s.loss << " lr " << std::scientific << std::setprecision(3) << s.lr << " grad_norm "
        << std::fixed << std::setprecision(4) << s.grad_norm << " " << std::setprecision(0)
        << s.tokens / std::max(step_seconds, 1e-9) << " tok/s";
      log_ << o.str() << std::endl;  // a log file shows each line as it happens
    }
  }
  // Any other line first ends the progress bar's line.
  std::ostream& line() {
    if (bar_open_) log_ << "\n";
    bar_open_ = false;
    return log_;
  }

 private:
  std::ostream& log_;
  int total_, every_, first_;
  bool tty_, bar_open_ = false;
};

}  // namespace

TrainSummary run_training(const Config& config, const TrainOptions& options, std::ostream& log,
                          Communicator& comm_ref) {
  // train.epochs becomes train.steps below, once the data's rows are known.
  Config cfg = config;
  Communicator* comm = &comm_ref;
  const int world = comm->world_size(), rank = comm->rank();
  const bool writer = rank == 0;  // only rank 0 touches output_dir
  const auto t_start = Clock::now();
  // runtime.device: auto picks CUDA when a device is usable; an explicit 'cuda' that cannot be
  // honoured is an error (backend_choice.h), never a silent CPU run.
  const BackendChoice choice = choose_backend(cfg.runtime, query_devices());
  cpu::set_blas_threads(cfg.runtime.threads);
  comm->set_timeout(cfg.comm.timeout_s);

  const int B = cfg.train.micro_batch_size, T = cfg.data.seq_len;
  int accum = cfg.train.grad_accum;  // a resume on another world size adjusts it (resume_plan.h)

  // Data first: a bad file fails before any memory is committed to the model, and every rank
  // learns that one rank could not read its data instead of waiting for it.
  std::unique_ptr<DataSource> train_data, eval_data;
  std::string data_error;
  try {
    DatasetOpener opener(cfg, log, writer);
    train_data = opener.open_train();
    if (!cfg.data.eval.empty()) eval_data = opener.open_eval();
  } catch (const std::exception& e) {
    data_error = e.what();
  }
  const Agreement data_ok = comm->agree(data_error.empty(), data_error);
  if (!data_ok.ok) throw AgreedError(data_ok.describe());
  if (cfg.train.epochs > 0) {
    // Every rank opened the same data, so every rank derives the same steps. The global batch
    // is the config's, or on --resume the checkpoint's, which plan_resume keeps on any world
    // size: so the resumed run derives the steps the interrupted one did. (An unreadable
    // checkpoint falls back to the config's; the resume below then reports it.)
    std::uint64_t global_batch = std::uint64_t(world) * accum * B;
    if (!options.resume.empty()) {
      try {
        global_batch = read_checkpoint_header(resolve_resume_dir(options.resume, cfg.output_dir))
                           .batch.global_batch();
      } catch (const std::exception&) {
      }
    }
    const std::uint64_t rows = train_data->num_rows();
    const double epochs = cfg.train.epochs;
    std::string error;
    try {
      cfg = resolve_epochs(cfg, rows, global_batch);
    } catch (const std::exception& e) {
      error = e.what();
    }
    const Agreement ok = comm->agree(error.empty(), error);
    if (!ok.ok) throw AgreedError(world > 1 ? ok.describe() : ok.what);
    log << "train.epochs " << epochs << ": " << cfg.train.steps << " steps of " << global_batch
        << " sequences over " << rows << " rows per epoch"
        << (cfg.optim.warmup_ratio > 0 ? ", " + std::to_string(cfg.optim.warmup_steps) +
                                             " of them warmup (optim.warmup_ratio)"
                                       : std::string())
        << "\n";
  }

  // Sharded, each rank reads only its slices of the checkpoint's layers.
  BaseWeights base = load_base(cfg, rank, world, cfg.runtime.shard_base);
  const std::size_t full_base_bytes = base.unsharded_bytes();
  const AdapterLayout layout = AdapterLayout::plan(cfg.model, cfg.adapter);
  const std::size_t P = layout.total();
  TrainState st;
  RankPattern init_pattern;
  // Host buffers (DoRA's magnitude init gathers layers): the host communicator, also for GPUs.
  st.params =
      initial_params(cfg, base, layout, cfg.adapter.init_from, &init_pattern, &comm->host());
  st.grads.assign(P, 0.0f);
  st.adam_m.assign(P, 0.0f);
  st.adam_v.assign(P, 0.0f);
  if (layout.type() == AdapterType::kAdaLora) {
    st.allocator.emplace(layout, cfg.adapter, cfg.train.steps);
    if (!init_pattern.empty()) {
      // Starting from a pruned PEFT adapter: keep its pattern until the schedule re-masks.
      AdaLoraState& s = st.allocator->state();
      for (std::size_t i = 0; i < init_pattern.size(); ++i) {
        for (std::size_t k = 0; k < init_pattern[i].size(); ++k) {
          s.mask[i * init_pattern[i].size() + k] = init_pattern[i][k] ? 1.0f : 0.0f;
        }
      }
      s.has_pattern = true;
    }
  }
  BackendSetup setup = backend_setup(cfg, base, layout, st, comm, &log);
  setup.debug = options.debug;
  setup.local_ranks = options.local_ranks;
  if (!choice.cuda()) {
    // Refused on every rank alike, before the model's constructor joins any collective.
    const std::string problem = cpu_memory_problem(setup);
    const Agreement fits = comm->agree(problem.empty(), problem);
    if (!fits.ok) throw AgreedError(world > 1 ? fits.describe() : fits.what);
  }
  const std::unique_ptr<TrainingBackend> backend = make_training_backend(choice, setup);
  // fp16 activations: GradScaler's dynamic loss scale (a checkpoint carries the scale).
  LossScaling loss_scale(choice.loss_scaling());
  const std::vector<GradBucket> buckets = plan_grad_buckets(
      layout, cfg.model.n_layers, static_cast<std::size_t>(cfg.comm.bucket_mb * 1024 * 1024));
  // One step's micro-batches, filled before the first forward: the loss is normalised by the
  // step's target count, which masked (-100) targets make data-dependent.
  // Sized once `accum` is final (a resume on another world size changes it).
  const std::size_t micro_tokens = std::size_t(B) * T;
  std::vector<std::int32_t> inputs, targets, positions, segments;

  // Resume: everything that changes from step to step comes back from the checkpoint; the data
  // order and random streams follow from the step alone. Every rank reads and checks it, and
  // they agree on the outcome so that a bad checkpoint is one error, not a hang.
  if (!options.resume.empty()) {
    std::string error;
    std::vector<std::string> notes;
    try {
      const std::string dir = resolve_resume_dir(options.resume, cfg.output_dir);
      const CheckpointHeader header = read_checkpoint_header(dir);
      const ResumePlan plan = plan_resume(header, cfg, world, options.resume_force);
      TrainStateView view;
      view.params = &st.params;
      view.adam_m = &st.adam_m;
      view.adam_v = &st.adam_v;
      view.adalora = st.allocator ? &st.allocator->state() : nullptr;
      read_train_state(header, cfg, layout, view);
      // The PEFT export of the folder must read back too: a damaged adapter file is refused now,
      // naming its tensor, rather than surviving into the next checkpoint's history.
      std::vector<float> exported(P);
      RankPattern exported_pattern;
      read_peft_adapter(dir, cfg, layout, exported.data(), &exported_pattern);
      // Last, as the readers above name the tensor a truncation cut into: every file has the
      // size the commit recorded.
      verify_checkpoint_files(header);
      if (view.step > cfg.train.steps) {
        throw std::runtime_error(dir + " is at step " + std::to_string(view.step) +
                                 ", beyond train.steps = " + std::to_string(cfg.train.steps));
      }
      st.step = view.step;
      st.optimizer_steps = view.optimizer_steps;
      loss_scale.restore(view.loss_scale, view.loss_scale_good_steps);
      accum = plan.grad_accum;
      notes = plan.notes;
      notes.push_back("resumed from " + dir + " at step " + std::to_string(st.step));
    } catch (const std::exception& e) {
      error = e.what();
    }
    const Agreement ok = comm->agree(error.empty(), error.empty() ? "resume" : error);
    if (!ok.ok) throw AgreedError(world > 1 ? ok.describe() : ok.what);
    for (const std::string& note : notes) log << note << "\n";
    log << std::flush;
  }
  for (auto* v : {&inputs, &targets, &positions, &segments}) v->assign(micro_tokens * accum, 0);
  backend->push_state();  // initial or resumed state into the backend's memory
  if (writer) {
    for (const std::string& name : remove_stale_checkpoint_temps(cfg.output_dir)) {
      log << "removed " << name << " (left by an interrupted write)\n";
    }
  }
  std::optional<MetricsWriter> metrics;
  if (writer) {
    std::filesystem::create_directories(cfg.output_dir);
    const std::string path = cfg.output_dir + "/metrics.jsonl";
    // A resumed run continues the history from its checkpoint's step: records an interrupted
    // run wrote after it are dropped, so the file reads like an uninterrupted run's.
    if (st.step > 0) drop_metrics_after(path, st.step);
    metrics.emplace(path, /*append=*/st.step > 0);
  }
  ProgressLog progress(log, cfg.train.steps, cfg.train.log_every, st.step);

  std::size_t trainable = 0;
  for (const auto& t : layout.tensors()) trainable += t.numel();
  const int lora_rank = layout.type() == AdapterType::kAdaLora ? cfg.adapter.init_r : cfg.adapter.r;
  // The shape as the model will compute it (from config.json when model.path is set), so a
  // checkpoint read differently than meant shows on the first line.
  const ModelConfig& mc = cfg.model;
  std::ostringstream rope;
  rope << std::setprecision(10) << "RoPE theta " << mc.rope_theta;
  if (mc.rope_scaling != RopeScaling::kNone) {
    rope << " " << to_string(mc.rope_scaling) << " x" << mc.rope_factor;
  }
  if (mc.rope_local_theta > 0) rope << " (sliding layers " << mc.rope_local_theta << ")";
  log << "peftrun " << PEFTRUN_VERSION << ": " << mc.n_layers << " layers, dim " << mc.dim
      << ", heads " << mc.n_heads << "/" << mc.n_kv_heads << " of " << mc.head_dim()
      << (mc.qk_norm ? " with q/k norm" : "") << (mc.sandwich_norms ? ", sandwich norms" : "")
      << ", " << rope.str() << ", MLP "
      << (mc.mlp_activation == MlpActivation::kGeluTanh ? "GeGLU (gelu_tanh)" : "SwiGLU")
      << (mc.norm_one_plus_weight ? ", norms 1 + w" : "")
      << (mc.scale_embeddings ? ", embeddings x sqrt(dim)" : "") << sliding_window_text(mc)
      << ", vocab " << mc.vocab_size << "; adapter " << to_string(cfg.adapter.type)
      << " r=" << lora_rank << " on " << layout.modules().size() << " modules (" << trainable
      << " trainable parameters)\n"
      << "base " << base.bytes() / 1024 << " KiB fp16 resident"
      << (base.sharded() ? " (sharded 1/" + std::to_string(world) + " of " +
                               std::to_string(full_base_bytes / 1024) + " KiB)"
                         : std::string())
      << ", " << backend->memory_summary() << "; device "
      << (choice.cuda() ? backend->describe() + " [" + choice.note + "]"
                        : choice.note + " with " + cpu::blas_description())
      << ", " << train_data->describe() << "; output " << cfg.output_dir << "\n";
  if (world > 1) {
    log << "data parallel over " << world << " ranks (" << comm->backend() << "): global batch "
        << world * accum * B << " sequences = " << world << " ranks x " << accum << " x " << B
        << "\n";
  }

  TrainSummary summary;
  summary.initial_eval_loss = std::numeric_limits<double>::quiet_NaN();
  summary.final_eval_loss = summary.initial_eval_loss;
  auto run_eval = [&](int step) {
    if (!eval_data) return;
    const double loss =
        evaluate(*backend, *eval_data, B, T, cfg.data.eval_batches, *comm).mean_loss;
    if (metrics) metrics->write({{"step", step}, {"eval_loss", loss}});
    std::ostringstream o;
    o << "eval step " << step << ": eval_loss " << std::fixed << std::setprecision(4) << loss;
    progress.line() << o.str() << "\n";
    if (step == 0) summary.initial_eval_loss = loss;
    summary.final_eval_loss = loss;
  };

  // One optimizer step (DESIGN §5): micro-batches -> all-reduce -> regulariser -> non-finite
  // check -> clip -> AdamW -> AdaLoRA budget.
  const std::uint64_t dropout_root = derive_key(cfg.train.seed, std::uint64_t(RngTag::kDropout));
  auto optimizer_step = [&]() {
    StepStats s;
    const double S = loss_scale.factor();  // the factor every gradient carries
    s.loss_scale = S;
    backend->zero_grads();
    // Normalise by the target count of the whole global batch, so the result does not depend
    // on how it is split into micro-batches (or ranks).
    // Rank r takes micro-batches [r*accum, (r+1)*accum) of the step's world*accum, so N ranks x
    // k micro-batches read exactly the samples of 1 rank x N*k (same dropout masks too).
    auto first_sample = [&](int micro) {
      return ((std::uint64_t(st.step) * world + rank) * accum + micro) * std::uint64_t(B);
    };
    for (int micro = 0; micro < accum; ++micro) {
      const std::size_t at = std::size_t(micro) * micro_tokens;
      train_data->fill_batch(
          first_sample(micro), B,
          {inputs.data() + at, targets.data() + at, positions.data() + at, segments.data() + at});
    }
    s.tokens = double(std::count_if(targets.begin(), targets.end(),
                                    [](std::int32_t t) { return t != cpu::kIgnoreIndex; }));
    comm->all_reduce_sum(&s.tokens, 1);
    const float grad_scale = static_cast<float>(S / s.tokens);
    double loss_sum = 0;
    for (int micro = 0; micro < accum; ++micro) {
      // On the last micro-batch, each bucket's all-reduce starts as soon as backward is below
      // it, overlapping communication with the backward of the remaining layers.
      std::size_t next_bucket = 0;
      if (world > 1 && micro == accum - 1) {
        backend->set_layer_backward_hook([&](int layer) {
          while (next_bucket < buckets.size() && buckets[next_bucket].lowest_layer >= layer) {
            const GradBucket& g = buckets[next_bucket++];
            comm->start_all_reduce_sum(backend->grads() + g.begin, g.end - g.begin);
          }
          comm->progress();
        });
      }
      const std::size_t at = std::size_t(micro) * micro_tokens;
      const Batch b{B,
                    T,
                    inputs.data() + at,
                    targets.data() + at,
                    positions.data() + at,
                    train_data->uses_segments() ? segments.data() + at : nullptr};
      loss_sum +=
          backend->train_micro_batch(b, grad_scale, derive_key(dropout_root, first_sample(micro)));
      backend->set_layer_backward_hook(nullptr);
    }
    if (world > 1) {
      comm->wait_all();  // the buckets started during the last micro-batch's backward
    } else {
      comm->all_reduce_sum(backend->grads(), P);
    }
    comm->all_reduce_sum(&loss_sum, 1);
    s.loss = loss_sum / s.tokens;
    if (layout.type() == AdapterType::kAdaLora) {
      // After the all-reduce: every rank adds the same term to the same reduced gradient.
      s.orth_reg = backend->add_adalora_orth_regulariser(cfg.adapter, S);
      s.loss += s.orth_reg;
    }
    // Unscaled (S is a power of two, so dividing is exact).
    s.grad_norm = std::sqrt(backend->grad_sum_squares()) / S;
    // Every rank sees the same reduced values, so all take the same verdict.
    const StepVerdict verdict =
        loss_scale.judge(std::isfinite(s.loss) && std::isfinite(s.grad_norm));
    if (verdict == StepVerdict::kSkip) {  // fp16 overflow: GradScaler skips the update
      s.lr = learning_rate(cfg.optim, cfg.train.steps, st.step);
      s.skipped = true;
      ++st.step;
      return s;
    }
    if (verdict == StepVerdict::kDiverged) {
      throw NonFiniteError(
          "non-finite " + std::string(std::isfinite(s.loss) ? "gradient" : "loss") + " at step " +
          std::to_string(st.step + 1) + " (loss " + std::to_string(s.loss) + ", grad_norm " +
          std::to_string(s.grad_norm) + "); lower optim.lr or set optim.max_grad_norm");
    }
    // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when above max_norm.
    double clip = 1.0;
    if (cfg.optim.max_grad_norm > 0 && s.grad_norm > cfg.optim.max_grad_norm) {
      clip = cfg.optim.max_grad_norm / (s.grad_norm + 1e-6);
    }
    cpu::AdamWHyper h;
    h.lr = s.lr = learning_rate(cfg.optim, cfg.train.steps, st.step);
    h.beta1 = cfg.optim.beta1;
    h.beta2 = cfg.optim.beta2;
    h.eps = cfg.optim.eps;
    h.weight_decay = cfg.optim.weight_decay;
    h.step = st.optimizer_steps + 1;  // bias correction counts applied updates only
    h.grad_scale = clip / S;          // clipping and the loss-scale undo, folded into AdamW
    backend->adamw_step(h);
    if (st.allocator) {
      // PEFT calls update_and_allocate after optimizer.step() with the (clipped) grads.
      backend->adalora_step(*st.allocator, st.step, clip / S);
      if (world > 1) check_same_mask_everywhere(*st.allocator, comm->host(), st.step + 1);
    }
    if (options.debug) {
      const std::string bad = backend->first_nonfinite_param();
      if (!bad.empty()) {
        throw NonFiniteError("non-finite value in " + bad + " after step " +
                             std::to_string(st.step + 1));
      }
    }
    ++st.optimizer_steps;
    ++st.step;
    return s;
  };

  if (st.step == 0) run_eval(0);
  const double tokens_per_step = double(world) * accum * B * T;
  double tokens_done = tokens_per_step * st.step;  // cumulative, as in an uninterrupted run
  double tokens_this_run = 0;
  const int first_step = st.step;  // > 0 when resumed
  // What a checkpoint borrows from the running state (the step is filled in per commit).
  auto commit = [&]() {
    backend->pull_state();  // the device state into the host mirror the checkpoint writes
    const RankPattern pattern = st.rank_pattern();
    CheckpointContents c;
    c.config = &cfg;
    c.layout = &layout;
    c.rank_pattern = pattern.empty() ? nullptr : &pattern;
    c.state.step = st.step;
    c.state.batch = BatchSplit{world, accum, B};
    c.state.params = &st.params;
    c.state.adam_m = &st.adam_m;
    c.state.adam_v = &st.adam_v;
    c.state.adalora = st.allocator ? &st.allocator->state() : nullptr;
    c.state.loss_scale = loss_scale.checkpoint_value();
    c.state.loss_scale_good_steps = loss_scale.good_steps();
    c.state.optimizer_steps = st.optimizer_steps;
    summary.checkpoint_dir = commit_checkpoint(c, *comm, progress.line());
  };
  const auto t_train = Clock::now();
  while (st.step < cfg.train.steps) {
    const auto t_step = Clock::now();
    const StepStats s = optimizer_step();
    backend->end_of_step();
    const double dt = seconds_since(t_step);
    tokens_done += s.tokens;
    tokens_this_run += s.tokens;
    nlohmann::json record = {{"step", st.step},
                             {"loss", s.loss},
                             {"lr", s.lr},
                             {"grad_norm", s.grad_norm},
                             {"tokens_per_s", s.tokens / std::max(dt, 1e-9)},
                             {"step_time_s", dt},
                             {"tokens", tokens_done}};
    if (loss_scale.enabled()) {
      record["loss_scale"] = s.loss_scale;
      if (s.skipped) record["skipped"] = true;
    }
    if (st.allocator) {
      record["orth_reg"] = s.orth_reg;
      int kept = 0;
      for (int r : st.allocator->ranks()) kept += r;
      record["adalora_rank_total"] = kept;
    }
    if (metrics) metrics->write(record);
    summary.final_train_loss = s.loss;
    progress.step(st.step, s, dt, tokens_this_run, seconds_since(t_train));
    const bool last = st.step == cfg.train.steps;
    if (cfg.train.eval_every > 0 && st.step % cfg.train.eval_every == 0 && !last) {
      run_eval(st.step);
    }
    // One tiny all-reduce per step: whether any rank was asked to stop. It is also every
    // rank's word that it finished the step, which the checkpoint commit relies on.
    double stop = options.stop ? options.stop->pending() : 0;
    comm->all_reduce_max(&stop, 1);
    const bool preempted = stop > 0 && !last;
    const int every = cfg.checkpoint.every_steps;
    if ((every > 0 && (st.step % every == 0 || last)) || preempted) commit();
    if (preempted) {
      summary.stopped_by = static_cast<int>(stop);
      break;
    }
  }
  if (!summary.stopped_by) run_eval(cfg.train.steps);
  const RankPattern pattern = st.rank_pattern();
  if (!summary.stopped_by) backend->pull_params();
  if (writer && !summary.stopped_by) {
    write_peft_adapter(cfg.output_dir, cfg, layout, st.params.data(),
                       pattern.empty() ? nullptr : &pattern);
  }
  if (world > 1) {
    // Per step: the gradient buffer once through the all-reduce; each layer gathered twice
    // (forward and backward) per micro-batch, plus the evaluations.
    progress.line() << "comm per step: " << P * sizeof(float) / 1024 << " KiB all-reduced in "
                    << buckets.size() << " bucket(s); "
                    << backend->gathered_bytes() / std::max(1, st.step - first_step) / 1024
                    << " KiB all-gathered per rank (incl. evaluation)\n";
  }
  if (st.allocator) {
    std::ostringstream ranks;
    for (int r : st.allocator->ranks()) ranks << r << " ";
    progress.line() << "adalora ranks per module: " << ranks.str() << "\n";
  }

  const std::string device_report = backend->end_of_run_report();
  if (!device_report.empty()) progress.line() << device_report;
  summary.device_allocations_in_loop = backend->device_allocations_since_start();
  summary.backend = backend->describe();
  summary.steps = st.step;
  summary.total_steps = cfg.train.steps;
  summary.seconds = seconds_since(t_start);
  summary.tokens_per_s = tokens_this_run / std::max(seconds_since(t_train), 1e-9);
  summary.adapter_dir = cfg.output_dir;
  return summary;
}

}  // namespace peftrun
