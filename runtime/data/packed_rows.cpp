#include "runtime/data/packed_rows.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <stdexcept>

namespace peftrun {

namespace {

std::vector<PackedRows::Chunk> cut_chunks(const TokenizedCorpus& c, int seq_len) {
  std::vector<PackedRows::Chunk> chunks;
  const auto L = static_cast<std::uint64_t>(seq_len);
  for (std::size_t d = 0; d < c.num_docs(); ++d) {
    const std::uint64_t begin = c.doc_offsets[d], end = c.doc_offsets[d + 1];
    for (std::uint64_t first = begin; first + 1 < end; first += L) {
      const std::uint64_t length = std::min(L, end - 1 - first);
      // Targets are tokens first + 1 .. first + length.
      const auto t0 = c.trained.begin() + static_cast<std::ptrdiff_t>(first + 1);
      if (std::find(t0, t0 + static_cast<std::ptrdiff_t>(length), 1) == t0 + length) continue;
      chunks.push_back({first, static_cast<std::uint32_t>(length)});
    }
  }
  return chunks;
}

}  // namespace

PackedRows plan_rows(const TokenizedCorpus& corpus, int seq_len, bool packing) {
  if (seq_len < 1) throw std::invalid_argument("plan_rows: seq_len must be >= 1");
  const std::vector<PackedRows::Chunk> chunks = cut_chunks(corpus, seq_len);
  PackedRows rows;
  if (!packing) {
    rows.chunks = chunks;
    rows.row_offsets.resize(chunks.size() + 1);
    std::iota(rows.row_offsets.begin(), rows.row_offsets.end(), std::uint64_t{0});
    return rows;
  }
  // Best-fit decreasing. Ties keep corpus order, so the plan is deterministic.
  std::vector<std::size_t> order(chunks.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return chunks[a].length > chunks[b].length;
  });
  std::vector<std::vector<std::size_t>> members;   // chunk indices per row
  std::multimap<std::uint32_t, std::size_t> open;  // free space -> row
  for (std::size_t k : order) {
    const std::uint32_t len = chunks[k].length;
    auto it = open.lower_bound(len);  // the row with the least free space that still fits
    std::size_t row;
    std::uint32_t free_space;
    if (it == open.end()) {
      row = members.size();
      members.emplace_back();
      free_space = static_cast<std::uint32_t>(seq_len);
    } else {
      row = it->second;
      free_space = it->first;
      open.erase(it);
    }
    members[row].push_back(k);
    free_space -= len;
    if (free_space > 0) open.emplace(free_space, row);
  }
  for (const auto& row : members) {
    for (std::size_t k : row) rows.chunks.push_back(chunks[k]);
    rows.row_offsets.push_back(rows.chunks.size());
  }
  return rows;
}

}  // namespace peftrun
