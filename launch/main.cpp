// peftrun command line: argv -> validated Config -> the requested command.
//
//   peftrun CONFIG.yaml [--set key.path=value ...] [--debug]     train
//   peftrun check CONFIG.yaml [--set ...]                         validate, print resolved config
//   peftrun eval CONFIG.yaml [--adapter DIR] [--dump-logits F]    held-out loss of an adapter
//   peftrun merge CONFIG.yaml --adapter DIR --out DIR [...]       merged HF model (merge_command.h)
//   peftrun inspect DIR                                           what a checkpoint holds
//   peftrun --help | --version | --print-default-config
//
// Exit codes: 0 success; 2 bad command line or config (one line per problem); 1 runtime failure;
// 3 training diverged (non-finite loss or gradient); 4 a collective timed out (comm/).
#include <cmath>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "comm/mpi_runtime.h"
#include "configs/config.h"
#include "launch/inspect_command.h"
#include "launch/merge_command.h"
#include "launch/signals.h"
#include "launch/world.h"
#include "runtime/train/backend_choice.h"
#include "runtime/train/evaluator.h"
#include "runtime/train/memory_plan.h"
#include "runtime/train/trainer.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;
constexpr int kExitDiverged = 3;  // kExitCommTimeout = 4 comes from comm/

const char* kUsage = R"(usage:
  peftrun CONFIG.yaml [--set key.path=value ...] [--debug] [--resume latest|DIR]
                                                             train an adapter
  peftrun check CONFIG.yaml [--set key.path=value ...]       validate; print the resolved config
                                                             and the memory a run will plan
  peftrun eval CONFIG.yaml [--adapter DIR] [--dump-logits FILE.safetensors] [--set ...]
                                                             mean loss and perplexity on data.eval
  peftrun merge CONFIG.yaml --adapter DIR --out DIR [--dtype fp16|bf16] [--force]
                [--max-shard-size SIZE] [--set ...]
                                                             the base with the adapter folded in,
                                                             as a Hugging Face model folder
  peftrun inspect DIR                                        a checkpoint's (or PEFT adapter's)
                                                             step, config, tensors, AdaLoRA ranks
  peftrun --print-default-config                             print the embedded configs/tiny.yaml
  peftrun --help | --version

options:
  --set key.path=value   override any config key (value parsed as YAML, e.g. --set
                         adapter.target_modules=[q_proj,v_proj]); validated like the file
  --resume latest|DIR    continue from OUTPUT/latest or a checkpoint folder: bitwise identical
                         to an uninterrupted run on the same number of ranks; on another,
                         grad_accum is adjusted to keep the global batch. A config that
                         differs in what changes the math is refused, naming the keys
  --resume-force         accept differences in keys that are safe to change on resume
                         (train.steps, the lr schedule, checkpoint cadence)
  --debug                check every activation and gradient after each layer, and the
                         parameters after each step, for non-finite values (names the op,
                         layer and tensor)
  --adapter DIR          (eval, merge) the PEFT adapter to evaluate or merge (default:
                         adapter.init_from; for eval, else a freshly initialised adapter)
  --dump-logits FILE     (eval) write the first eval batch's logits, inputs and labels
  --out DIR              (merge) the folder to write (config.json, model.safetensors, tokenizer
                         files); written beside it and renamed into place, never half written
  --dtype fp16|bf16      (merge) the merged weights' type (default: the base's, bf16 for a bf16
                         checkpoint, else fp16)
  --force                (merge) replace a non-empty --out that is not a previous merge output
  --max-shard-size SIZE  (merge) shard the weights above SIZE, e.g. 2GB (default 5GB)

multi-rank: mpirun -np N peftrun CONFIG.yaml (data parallel; see README "Running on a cluster")

signals: SIGTERM or SIGINT (to any one rank) finishes the current step, writes a checkpoint
         and exits 0; a second signal aborts at once (exit 128 + signal number)

exit codes: 0 ok (or stopped by a signal with a checkpoint), 1 runtime error, 2 bad command
            line or config, 3 training diverged, 4 a collective timed out (a peer rank died or
            hangs; see comm.timeout_s)
)";

struct Args {
  std::string command = "train";
  std::string config_path;
  std::vector<std::string> overrides;
  bool debug = false;
  std::string adapter_dir;
  std::string dump_logits;
  std::string resume;
  bool resume_force = false;
};

// Returns false (after printing why) when argv is malformed.
bool parse_args(int argc, char** argv, Args& args) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--set") {
      if (i + 1 >= argc) {
        std::cerr << "peftrun: --set needs a key.path=value argument\n";
        return false;
      }
      args.overrides.emplace_back(argv[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      args.overrides.push_back(a.substr(6));
    } else if (a == "--debug") {
      args.debug = true;
    } else if (a == "--resume-force") {
      args.resume_force = true;
    } else if (a == "--resume") {
      if (i + 1 >= argc) {
        std::cerr << "peftrun: --resume needs 'latest' or a checkpoint folder\n";
        return false;
      }
      args.resume = argv[++i];
    } else if (a == "--adapter" || a == "--dump-logits") {
      if (i + 1 >= argc) {
        std::cerr << "peftrun: " << a << " needs a path argument\n";
        return false;
      }
      (a == "--adapter" ? args.adapter_dir : args.dump_logits) = argv[++i];
    } else if (a.size() > 1 && a[0] == '-') {
      std::cerr << "peftrun: unknown option '" << a << "' (see peftrun --help)\n";
      return false;
    } else {
      positional.push_back(a);
    }
  }
  if (!positional.empty() &&
      (positional[0] == "check" || positional[0] == "train" || positional[0] == "eval")) {
    args.command = positional[0];
    positional.erase(positional.begin());
  }
  if (positional.size() != 1) {
    std::cerr << "peftrun: expected exactly one CONFIG.yaml, got " << positional.size()
              << " (see peftrun --help)\n";
    return false;
  }
  args.config_path = positional[0];
  if (args.command != "eval" && (!args.adapter_dir.empty() || !args.dump_logits.empty())) {
    std::cerr << "peftrun: --adapter and --dump-logits only apply to 'peftrun eval'\n";
    return false;
  }
  return true;
}

}  // namespace

namespace {

// Runs the parsed command on this rank. Sets `agreed` when the failure it returns is known to
// every rank (same config, or a Communicator::agree), so MpiRuntime::finish can exit cleanly
// instead of aborting the job.
int run_command(const Args& args, const peftrun::WorldInfo& world, bool& agreed) {
  const bool rank0 = world.rank == 0;
  std::ostream null_log(nullptr);  // ranks other than 0 stay quiet
  std::ostream& log = rank0 ? std::cout : null_log;
  const std::string who =
      world.world_size > 1 ? "peftrun: rank " + std::to_string(world.rank) + ": " : "peftrun: ";

  // Every rank reads the same config, so config errors are agreed by construction.
  const peftrun::ConfigLoadResult loaded =
      peftrun::load_config_file(args.config_path, args.overrides);
  if (!loaded.ok()) {
    agreed = true;
    if (!rank0) return kExitUsage;
    for (const auto& e : loaded.errors) std::cerr << e.format() << "\n";
    std::cerr << "peftrun: " << loaded.errors.size() << " problem"
              << (loaded.errors.size() == 1 ? "" : "s") << " in the config; nothing was run\n";
    return kExitUsage;
  }
  if (args.command == "check") {
    log << peftrun::config_to_yaml(loaded.config);
    try {
      log << peftrun::memory_plan_comment(loaded.config);
    } catch (const std::exception& e) {
      log << "# planned memory: not computed (" << e.what() << ")\n";
    }
    return kExitOk;
  }

  try {
    // GPU ranks reduce and gather device buffers: NCCL, over the host communicator.
    const peftrun::BackendChoice backend =
        peftrun::choose_backend(loaded.config.runtime, peftrun::query_devices());
    auto comm = peftrun::make_world_communicator(world, loaded.config.comm.timeout_s,
                                                 backend.cuda() && world.world_size != 1);
    if (args.command == "eval") {
      peftrun::EvalOptions options;
      options.adapter_dir = args.adapter_dir;
      options.dump_logits = args.dump_logits;
      options.local_ranks = world.local_size > 0 ? world.local_size : 1;
      peftrun::run_eval_command(loaded.config, options, log, *comm);
      return kExitOk;
    }
    const peftrun::SignalStop stop(who);
    peftrun::TrainOptions options;
    options.debug = args.debug;
    options.resume = args.resume;
    options.resume_force = args.resume_force;
    options.stop = &stop;
    options.local_ranks = world.local_size > 0 ? world.local_size : 1;
    const peftrun::TrainSummary s = peftrun::run_training(loaded.config, options, log, *comm);
    if (s.stopped_by) {
      log << "peftrun: stopped by " << peftrun::signal_name(s.stopped_by) << " after step "
          << s.steps << " of " << s.total_steps << "; checkpoint " << s.checkpoint_dir
          << " (continue with --resume latest)\n";
      return kExitOk;
    }
    std::ostringstream done;
    done << std::fixed << "done: " << s.steps << " steps in " << std::setprecision(1) << s.seconds
         << " s, " << static_cast<long>(s.tokens_per_s) << " tok/s; train loss "
         << std::setprecision(4) << s.final_train_loss;
    if (!std::isnan(s.final_eval_loss)) {  // NaN: no data.eval split
      done << "; eval loss " << s.initial_eval_loss << " -> " << s.final_eval_loss;
    }
    log << done.str() << "\nadapter: " << s.adapter_dir
        << "/adapter_model.safetensors + adapter_config.json\n";
    return kExitOk;
  } catch (const peftrun::NonFiniteError& e) {
    // Loss and gradients are all-reduced before the check: every rank sees the same values.
    agreed = true;
    if (rank0) std::cerr << "peftrun: training diverged: " << e.what() << "\n";
    return kExitDiverged;
  } catch (const peftrun::AgreedError& e) {
    agreed = true;
    if (rank0) std::cerr << "peftrun: error: " << e.what() << "\n";
    return kExitFailure;
  } catch (const std::exception& e) {
    std::cerr << who << "error: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && !std::strcmp(argv[1], "inspect")) {
    return peftrun::run_inspect_command({argv + 2, argv + argc}, std::cout, std::cerr);
  }
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::cout << kUsage;
      return kExitOk;
    }
    if (!std::strcmp(argv[i], "--version")) {
      std::cout << "peftrun " << PEFTRUN_VERSION << "\n";
      return kExitOk;
    }
    if (!std::strcmp(argv[i], "--print-default-config")) {
      std::cout << peftrun::embedded_default_config();
      return kExitOk;
    }
  }
  // merge has options of its own and never uses MPI (launch/merge_command.cpp).
  if (argc > 1 && !std::strcmp(argv[1], "merge"))
    return peftrun::run_merge_command(argc - 1, argv + 1);
  Args args;
  if (!parse_args(argc, argv, args)) return kExitUsage;

  peftrun::WorldInfo world;
  try {
    world = peftrun::discover_world();
  } catch (const std::exception& e) {
    std::cerr << "peftrun: error: " << e.what() << "\n";
    return kExitUsage;
  }
  // MPI only when an MPI launcher started us: `peftrun train.yaml` stays a plain process.
  peftrun::MpiRuntime mpi(&argc, &argv, world.launched_by_mpi);
  bool agreed = false;
  const int code = run_command(args, world, agreed);
  return mpi.finish(code, agreed);
}
