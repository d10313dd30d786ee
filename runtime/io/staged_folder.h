// A folder that appears complete or not at all: everything is written into a hidden temporary
// sibling (`.NAME.tmp-HOST-PID` next to the target), and commit() swaps it into place with one
// rename, so a crash, a full disk or any error half way leaves the target exactly as it was.
// `peftrun merge` writes its output folder this way.
#pragma once

#include <string>
#include <vector>

namespace peftrun {

class StagedFolder {
 public:
  // Creates the target's parent folders if needed and an empty temporary folder beside the
  // target, after removing the temporary folders of earlier runs on this machine whose process
  // no longer exists (and previous targets they moved aside, once the target exists). Throws
  // std::runtime_error naming the folder and the OS error (e.g. permission denied, or a parent that
  // is a file).
  explicit StagedFolder(const std::string& target);
  // Removes the temporary folder and everything in it unless commit() succeeded.
  ~StagedFolder();
  StagedFolder(const StagedFolder&) = delete;
  StagedFolder& operator=(const StagedFolder&) = delete;

  // Where to write the contents.
  const std::string& path() const { return tmp_; }
  const std::string& target() const { return target_; }
  // What the constructor removed (full paths), for the caller to report.
  const std::vector<std::string>& removed_leftovers() const { return removed_leftovers_; }

  // fsyncs the temporary folder, then puts it in the target's place: a plain rename when the
  // target does not exist, else an atomic exchange (renameat2 RENAME_EXCHANGE; on filesystems
  // without it, two renames, so for a moment the target is absent but never partial) after
  // which the old target is deleted. The caller decides whether an existing target may be
  // replaced. Throws naming both folders on failure, leaving the target unchanged.
  void commit();

 private:
  std::string target_;
  std::string parent_;
  std::string tmp_;
  bool committed_ = false;
  std::vector<std::string> removed_leftovers_;
};

}  // namespace peftrun
