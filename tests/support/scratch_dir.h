// Temporary folders for tests: a scoped one (ScratchDir, removed when it goes out of scope),
// and a per-process one (test_output_dir, removed when the test program exits having passed and
// kept for inspection when it failed), plus a one-call file writer.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace peftrun::testing_support {

// `<temp dir>/peftrun_<name>_<pid>`: unique per test process (ctest runs tests side by side).
inline std::filesystem::path process_temp_path(const std::string& name) {
  return std::filesystem::temp_directory_path() /
         ("peftrun_" + name + "_" + std::to_string(::getpid()));
}

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& name) : path_(process_temp_path(name)) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() { std::filesystem::remove_all(path_); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Writes `text` to `name` in this folder and returns its path.
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name, std::ios::binary) << text;
    return file(name);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

namespace detail {

// The folders handed out by test_output_dir. Its destructor runs at exit, after RUN_ALL_TESTS:
// gtest's UnitTest is never destroyed, so asking it whether everything passed is safe there.
class TestOutputDirs {
 public:
  static TestOutputDirs& instance() {
    static TestOutputDirs dirs;
    return dirs;
  }
  void add(const std::filesystem::path& p) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& q : paths_) {
      if (q == p) return;
    }
    paths_.push_back(p);
  }
  ~TestOutputDirs() {
    const bool passed = ::testing::UnitTest::GetInstance()->Passed();
    for (const auto& p : paths_) {
      std::error_code ec;
      if (passed) {
        std::filesystem::remove_all(p, ec);
      } else if (std::filesystem::exists(p, ec)) {
        std::fprintf(stderr, "test output kept for inspection: %s\n", p.c_str());
      }
    }
  }

 private:
  std::mutex mu_;
  std::vector<std::filesystem::path> paths_;
};

}  // namespace detail

// `process_temp_path(name)`, emptied and (with `create`) made again. It stays while the test
// program runs, so a test can hand it to child processes and read what they left; at exit it
// is removed if every test passed and kept, with its path printed, if one failed.
inline std::filesystem::path test_output_dir(const std::string& name, bool create = true) {
  const std::filesystem::path d = process_temp_path(name);
  detail::TestOutputDirs::instance().add(d);
  std::filesystem::remove_all(d);
  if (create) std::filesystem::create_directories(d);
  return d;
}

}  // namespace peftrun::testing_support
