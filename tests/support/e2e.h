// Helpers for the end-to-end tests that drive the peftrun binary and look at what it wrote:
// scratch folders, whole-folder byte snapshots, metrics records, adapter values, mpirun.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/io/safetensors.h"
#include "tests/support/run_command.h"
#include "tests/support/scratch_dir.h"

namespace peftrun::testing_support {

namespace e2e_fs = std::filesystem;

// An empty folder under the temp dir, unique to this test process; removed at exit if the
// tests passed.
inline e2e_fs::path fresh_dir(const std::string& name) {
  return test_output_dir("e2e_" + name);
}

inline std::string file_bytes(const e2e_fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every regular file under `dir` (relative path -> bytes): "the folder is unchanged" is
// snapshot(before) == snapshot(after).
inline std::map<std::string, std::string> snapshot(const e2e_fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : e2e_fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) out[e2e_fs::relative(e.path(), dir).string()] = file_bytes(e.path());
  }
  return out;
}

// "" when both snapshots hold the same files with the same bytes, else the names that differ
// (binary contents make poor failure messages).
inline std::string snapshot_difference(const std::map<std::string, std::string>& a,
                                       const std::map<std::string, std::string>& b) {
  std::string out;
  for (const auto& [name, bytes] : a) {
    const auto it = b.find(name);
    if (it == b.end())
      out += " only in the first: " + name + ";";
    else if (it->second != bytes)
      out += " differs: " + name + ";";
  }
  for (const auto& [name, bytes] : b) {
    if (!a.count(name)) out += " only in the second: " + name + ";";
  }
  return out;
}

inline std::vector<nlohmann::json> read_jsonl(const e2e_fs::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The `loss` of every training record with step > after_step, in order.
inline std::vector<double> train_losses(const e2e_fs::path& metrics, int after_step = 0) {
  std::vector<double> out;
  for (const auto& rec : read_jsonl(metrics)) {
    if (rec.contains("loss") && rec["step"].get<int>() > after_step) out.push_back(rec["loss"]);
  }
  return out;
}

// Every tensor of DIR/adapter_model.safetensors, concatenated in name order.
inline std::vector<float> adapter_values(const e2e_fs::path& dir) {
  peftrun::SafetensorsReader reader((dir / "adapter_model.safetensors").string());
  std::vector<float> all;
  for (const auto& t : reader.tensors()) {
    const std::vector<float> v = reader.read_tensor_f32(t.name);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

// DIR/adapter_config.json's AdaLoRA rank_pattern (null for other adapters).
inline nlohmann::json rank_pattern(const e2e_fs::path& dir) {
  return nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"))["rank_pattern"];
}

// ||a - b|| / ||a|| in double.
inline double relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(a[i]) * a[i];
  }
  return std::sqrt(diff / norm);
}

// Runs build/peftrun with `args` (a shell fragment), optionally under `mpirun -np ranks`.
inline CommandResult run_peftrun(const std::string& args, int ranks = 1,
                                 const std::string& env = "") {
  std::string cmd = env.empty() ? "" : env + " ";
  if (ranks > 1) cmd += "mpirun --oversubscribe -np " + std::to_string(ranks) + " ";
  return run_command(cmd + PEFTRUN_BINARY + " " + args);
}

// mpirun-based tests skip (and say so) without MPI. As root (CI containers) Open MPI needs two
// variables, set here for this test process only. Each test process also gets its own Open MPI
// session directory base: with the shared default (/tmp/ompi.HOST.UID), one mpirun finishing
// can remove the parent directory while a concurrent one (ctest -j) is creating its own
// session directory in it, and that mpirun then fails in orte_init (seen once on a loaded
// machine).
inline bool mpirun_available() {
#ifdef PEFTRUN_WITH_MPI
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) return false;
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  static const std::string session_base = test_output_dir("ompi").string();
  setenv("OMPI_MCA_orte_tmpdir_base", session_base.c_str(), 1);
  return true;
#else
  return false;
#endif
}

// Starts `/bin/sh -c "exec COMMAND"` in the background (stdout and stderr to `log`); returns
// its pid, so the test can signal it while it runs.
inline pid_t spawn(const std::string& command, const e2e_fs::path& log) {
  const std::string cmd = "exec " + command + " > '" + log.string() + "' 2>&1";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// Waits for `pid` at most `timeout_s`; returns its exit code, 128 + N when signal N killed it,
// or -1 when it was still running (it is then SIGKILLed).
inline int wait_exit(pid_t pid, double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeout_s)) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Lines in a file (0 when it does not exist): how far a running job's metrics.jsonl has got.
inline int count_lines(const e2e_fs::path& p) {
  std::ifstream in(p);
  int n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

// Polls until `path` has at least `lines` lines; false after `timeout_s`.
inline bool wait_for_lines(const e2e_fs::path& path, int lines, double timeout_s) {
  const auto start = std::chrono::steady_clock::now();
  while (count_lines(path) < lines) {
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(timeout_s)) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace peftrun::testing_support
