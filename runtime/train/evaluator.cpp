#include "runtime/train/evaluator.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <ostream>

#include "kernels/cross_entropy.h"
#include "kernels/gemm.h"
#include "runtime/data/dataset_factory.h"
#include "runtime/io/safetensors.h"
#include "runtime/train/model_setup.h"
#include "runtime/train/trainer.h"
#include "runtime/train/training_backend.h"

namespace peftrun {

EvalResult evaluate(EvalModel& model, const DataSource& data, int batch, int seq_len,
                    int max_batches, Communicator& comm, bool keep_first_logits) {
  const std::size_t n = std::size_t(batch) * seq_len;
  std::vector<std::int32_t> inputs(n), targets(n), positions(n), segments(n);
  const int batches = std::min(max_batches, data.num_eval_batches(batch));
  EvalResult result;
  double sums[2] = {0, 0};  // loss sum, target tokens
  // Ranks split the batches round-robin; the sums are reduced below. Every rank runs the same
  // number of forwards: with a sharded base each forward all-gathers the layers, a collective,
  // so a rank with one batch fewer would leave the others waiting in it. Such a rank repeats a
  // batch and drops its result.
  const int world = comm.world_size();
  const int rounds = (batches + world - 1) / world;
  for (int round = 0; round < rounds; ++round) {
    const int i = round * world + comm.rank();
    if (i >= batches) {
      data.fill_eval_batch(0, batch,
                           {inputs.data(), targets.data(), positions.data(), segments.data()});
      const Batch pad{
          batch,          seq_len,          inputs.data(),
          targets.data(), positions.data(), data.uses_segments() ? segments.data() : nullptr};
      (void)model.eval_micro_batch(pad, nullptr);
      continue;
    }
    data.fill_eval_batch(i, batch,
                         {inputs.data(), targets.data(), positions.data(), segments.data()});
    const Batch b{
        batch,          seq_len,          inputs.data(),
        targets.data(), positions.data(), data.uses_segments() ? segments.data() : nullptr};
    float* logits = nullptr;
    if (keep_first_logits && i == 0) {
      result.first_logits.resize(n * std::size_t(model.vocab_size()));
      result.first_inputs = inputs;
      result.first_targets = targets;
      if (data.uses_segments()) {
        result.first_positions = positions;
        result.first_segments = segments;
      }
      logits = result.first_logits.data();
    }
    sums[0] += model.eval_micro_batch(b, logits);
    sums[1] += double(std::count_if(targets.begin(), targets.end(),
                                    [](int t) { return t != cpu::kIgnoreIndex; }));
  }
  comm.all_reduce_sum(sums, 2);
  result.tokens = sums[1];
  result.mean_loss = sums[1] > 0 ? sums[0] / sums[1] : std::numeric_limits<double>::quiet_NaN();
  return result;
}

EvalResult run_eval_command(const Config& cfg, const EvalOptions& options, std::ostream& log,
                            Communicator& comm) {
  if (cfg.data.eval.empty()) {
    throw std::runtime_error("data.eval: empty; peftrun eval needs a held-out data file");
  }
  const BackendChoice choice = choose_backend(cfg.runtime, query_devices());
  cpu::set_blas_threads(cfg.runtime.threads);
  comm.set_timeout(cfg.comm.timeout_s);
  const int B = cfg.train.micro_batch_size, T = cfg.data.seq_len;
  const std::unique_ptr<DataSource> data = DatasetOpener(cfg, log, comm.rank() == 0).open_eval();
  // Sharded as in training (runtime.shard_base, default with several ranks): each rank reads
  // only its slices, and the backend all-gathers a layer just before use.
  const BaseWeights base = load_base(cfg, comm.rank(), comm.world_size(), cfg.runtime.shard_base);
  const AdapterLayout layout = AdapterLayout::plan(cfg.model, cfg.adapter);
  const std::string adapter_dir =
      options.adapter_dir.empty() ? cfg.adapter.init_from : options.adapter_dir;
  RankPattern pattern;
  TrainState st;
  // A fresh DoRA adapter's magnitudes need whole layers: gathered over the host communicator.
  st.params = initial_params(cfg, base, layout, adapter_dir, &pattern, &comm.host());
  for (auto* v : {&st.grads, &st.adam_m, &st.adam_v}) v->assign(st.params.size(), 0.0f);
  BackendSetup setup = backend_setup(cfg, base, layout, st, &comm, &log);
  setup.recompute_layers = true;  // forward only: one layer's activations at a time suffice
  setup.local_ranks = options.local_ranks;
  if (!choice.cuda()) {
    const std::string problem = cpu_memory_problem(setup);
    const Agreement fits = comm.agree(problem.empty(), problem);
    if (!fits.ok) throw AgreedError(comm.world_size() > 1 ? fits.describe() : fits.what);
  }
  const std::unique_ptr<TrainingBackend> model = make_training_backend(choice, setup);
  model->push_state();
  const EvalResult r =
      evaluate(*model, *data, B, T, cfg.data.eval_batches, comm, !options.dump_logits.empty());
  log << "eval " << cfg.data.eval << " on " << model->describe()
      << (base.sharded() ? ", base sharded 1/" + std::to_string(comm.world_size()) + " (" +
                               std::to_string(base.bytes() / 1024) + " KiB resident of " +
                               std::to_string(base.unsharded_bytes() / 1024) + " KiB)"
                         : std::string())
      << " (" << static_cast<long long>(r.tokens) << " tokens, "
      << "adapter " << (adapter_dir.empty() ? "freshly initialised" : adapter_dir) << "): loss "
      << r.mean_loss << ", perplexity " << std::exp(r.mean_loss) << "\n";
  if (!options.dump_logits.empty() && comm.rank() == 0) {
    SafetensorsWriter w;
    const std::int64_t V = cfg.model.vocab_size;
    w.add_f32("logits", {B, T, V}, r.first_logits);
    w.add_i32("input_ids", {B, T}, r.first_inputs);
    w.add_i32("labels", {B, T}, r.first_targets);
    if (!r.first_segments.empty()) {
      // Packed rows: the RoPE positions and the document of every token (-1 = padding).
      w.add_i32("position_ids", {B, T}, r.first_positions);
      w.add_i32("segment_ids", {B, T}, r.first_segments);
    }
    w.set_metadata("format", "pt");
    w.set_metadata("note", "labels[b, t] is the target of logits[b, t] (already shifted)");
    w.write(options.dump_logits);
    log << "wrote logits of the first eval batch to " << options.dump_logits << "\n";
  }
  return r;
}

}  // namespace peftrun
