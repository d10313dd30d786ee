#include "runtime/train/checkpoint_commit.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <ostream>
#include <stdexcept>
#include <utility>

#include "runtime/io/file_io.h"
#include "runtime/train/trainer.h"

namespace peftrun {

namespace fs = std::filesystem;

namespace {

constexpr const char* kPrefix = "checkpoint-";
constexpr const char* kTempPrefix = ".tmp-checkpoint-";
constexpr const char* kOldSuffix = ".old";  // fallback rewrite without RENAME_EXCHANGE
constexpr const char* kPrunedSuffix = ".pruned";

// The step of a `checkpoint-N` name, or -1.
long checkpoint_step(const std::string& name) {
  const std::string prefix = kPrefix;
  if (name.rfind(prefix, 0) != 0 || name.size() == prefix.size()) return -1;
  for (std::size_t i = prefix.size(); i < name.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  }
  try {
    return std::stol(name.substr(prefix.size()));
  } catch (const std::exception&) {
    return -1;
  }
}

// Moves the complete temporary folder to `final_dir`; returns how to undo it.
struct Placement {
  enum Kind { kFresh, kExchanged, kRenamedAside } kind = kFresh;
  fs::path aside;  // kRenamedAside: where the old folder went
};

Placement place(const fs::path& tmp, const fs::path& final_dir) {
  Placement p;
  if (!fs::exists(final_dir)) {
    rename_durably(tmp.string(), final_dir.string());
    return p;
  }
  // Rewriting a step (a run resumed from an earlier checkpoint): swap atomically, so the name
  // never points at nothing; the old copy is left in `tmp`.
  if (exchange_paths(tmp.string(), final_dir.string())) {
    p.kind = Placement::kExchanged;
    return p;
  }
  p.kind = Placement::kRenamedAside;
  p.aside = tmp.string() + kOldSuffix;
  fs::remove_all(p.aside);
  rename_durably(final_dir.string(), p.aside.string());
  rename_durably(tmp.string(), final_dir.string());
  return p;
}

void undo(const Placement& p, const fs::path& tmp, const fs::path& final_dir) {
  switch (p.kind) {
    case Placement::kFresh:
      rename_durably(final_dir.string(), tmp.string());
      break;
    case Placement::kExchanged:
      exchange_paths(tmp.string(), final_dir.string());
      break;
    case Placement::kRenamedAside:
      rename_durably(final_dir.string(), tmp.string());
      rename_durably(p.aside.string(), final_dir.string());
      break;
  }
}

// Keeps the newest keep_last checkpoints up to `step` (the one just committed is the newest of
// them, and `latest` names it); folders of later steps, left by a run this one was resumed from
// before, are replaced as this run reaches them.
void prune(const fs::path& out, int step, int keep_last, std::ostream& log) {
  std::vector<std::pair<long, fs::path>> older;
  for (const auto& e : fs::directory_iterator(out)) {
    const long s = checkpoint_step(e.path().filename().string());
    if (e.is_directory() && s >= 0 && s < step) older.emplace_back(s, e.path());
  }
  std::sort(older.begin(), older.end());
  const std::size_t keep_older = static_cast<std::size_t>(std::max(keep_last - 1, 0));
  for (std::size_t i = 0; i + keep_older < older.size(); ++i) {
    // Renamed first (atomic), so a crash mid-deletion never leaves a half checkpoint under a
    // checkpoint-N name; a leftover temporary name is removed at the next start.
    const fs::path doomed = out / (kTempPrefix + std::to_string(older[i].first) + kPrunedSuffix);
    std::error_code ec;
    fs::remove_all(doomed, ec);
    fs::rename(older[i].second, doomed, ec);
    if (!ec) fs::remove_all(doomed, ec);
    if (ec) {
      log << "warning: cannot prune " << older[i].second.string() << ": " << ec.message() << "\n";
    }
  }
}

// Rank 0's part: steps 1-4 of the protocol. Throws with what failed and what is intact.
std::string write_and_commit(const CheckpointContents& c, std::ostream& log) {
  const Config& cfg = *c.config;
  const fs::path out = cfg.output_dir;
  const std::string name = kPrefix + std::to_string(c.state.step);
  const fs::path final_dir = out / name;
  const fs::path tmp = out / (kTempPrefix + std::to_string(c.state.step));
  const std::string previous = read_latest_pointer(out.string());
  bool placed = false;
  Placement placement;
  try {
    fs::create_directories(out);
    fs::remove_all(tmp);
    write_peft_adapter(tmp.string(), cfg, *c.layout, c.state.params->data(), c.rank_pattern);
    write_train_state(tmp.string(), cfg, c.state);  // trainer_state.json last
    fsync_directory(tmp.string());
    placement = place(tmp, final_dir);
    placed = true;
    write_latest_pointer(out.string(), name);
  } catch (const std::exception& e) {
    std::string undo_error;
    try {
      if (placed) undo(placement, tmp, final_dir);
    } catch (const std::exception& u) {
      undo_error = std::string("; undoing the rename failed too: ") + u.what();
    }
    std::error_code ec;
    fs::remove_all(tmp, ec);
    const std::string state = previous.empty()
                                  ? "; there was no earlier checkpoint"
                                  : "; the previous checkpoint " + (out / previous).string() +
                                        " and " + (out / "latest").string() + " are intact";
    throw std::runtime_error("checkpoint " + final_dir.string() + " was not written: " + e.what() +
                             undo_error + (undo_error.empty() ? state : ""));
  }
  // Committed; what follows only tidies up.
  std::error_code ec;
  if (placement.kind == Placement::kExchanged) fs::remove_all(tmp, ec);
  if (placement.kind == Placement::kRenamedAside) fs::remove_all(placement.aside, ec);
  prune(out, c.state.step, cfg.checkpoint.keep_last, log);
  return final_dir.string();
}

}  // namespace

std::string commit_checkpoint(const CheckpointContents& c, Communicator& comm, std::ostream& log) {
  std::string dir, error;
  if (comm.rank() == 0) {
    try {
      dir = write_and_commit(c, log);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  const Agreement a = comm.agree(error.empty(), error.empty() ? "checkpoint committed" : error);
  if (!a.ok) throw AgreedError(comm.world_size() > 1 ? a.describe() : a.what);
  if (comm.rank() == 0) log << "saved checkpoint " << dir << std::endl;
  return (fs::path(c.config->output_dir) / (kPrefix + std::to_string(c.state.step))).string();
}

std::vector<std::string> remove_stale_checkpoint_temps(const std::string& output_dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return removed;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(output_dir, ec)) {
    const std::string name = e.path().filename().string();
    const auto tmp_pos = name.rfind(".tmp-");
    const bool write_temp = tmp_pos != std::string::npos && tmp_pos + 5 < name.size() &&
                            std::all_of(name.begin() + long(tmp_pos) + 5, name.end(), [](char ch) {
                              return std::isdigit(static_cast<unsigned char>(ch));
                            });
    if (name.rfind(kTempPrefix, 0) == 0 || write_temp) stale.push_back(e.path());
  }
  for (const fs::path& p : stale) {
    const std::string name = p.filename().string();
    // A fallback rewrite killed between its two renames: the aside copy is the only one.
    const std::string old_suffix = kOldSuffix;
    if (name.size() > old_suffix.size() &&
        name.compare(name.size() - old_suffix.size(), old_suffix.size(), old_suffix) == 0) {
      const fs::path original =
          p.parent_path() / (kPrefix + name.substr(std::string(kTempPrefix).size(),
                                                   name.size() - std::string(kTempPrefix).size() -
                                                       old_suffix.size()));
      if (!fs::exists(original)) {
        rename_durably(p.string(), original.string());
        continue;
      }
    }
    fs::remove_all(p, ec);
    if (!ec) removed.push_back(name);
  }
  return removed;
}

}  // namespace peftrun
