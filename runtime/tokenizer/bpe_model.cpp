#include "runtime/tokenizer/bpe_model.h"

#include <cstdio>
#include <queue>

#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

namespace {

constexpr std::size_t kCacheLimit = 1 << 20;   // words; cleared when full
constexpr std::size_t kCachedWordBytes = 256;  // longer words are not worth caching

std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) |
         static_cast<std::uint32_t>(b);
}

}  // namespace

BpeModel::BpeModel(BpeModel&& o) noexcept {
  *this = std::move(o);
}

BpeModel& BpeModel::operator=(BpeModel&& o) noexcept {
  vocab_ = std::move(o.vocab_);
  id_to_token_ = std::move(o.id_to_token_);
  has_id_ = std::move(o.has_id_);
  merges_ = std::move(o.merges_);
  unk_id_ = o.unk_id_;
  fuse_unk_ = o.fuse_unk_;
  byte_fallback_ = o.byte_fallback_;
  ignore_merges_ = o.ignore_merges_;
  continuing_prefix_ = std::move(o.continuing_prefix_);
  end_suffix_ = std::move(o.end_suffix_);
  std::copy(std::begin(o.byte_ids_), std::end(o.byte_ids_), std::begin(byte_ids_));
  cache_.clear();
  return *this;
}

BpeModel BpeModel::parse(const Json& spec, const std::string& where) {
  const std::string type = json_string_or(spec, "type", "BPE", where);
  if (type != "BPE") {
    json_fail(where, "model type '" + type + "' is not supported (only BPE models are)");
  }
  BpeModel m;
  const Json& vocab = json_field(spec, "vocab", where);
  if (!vocab.is_object()) json_fail(where + ".vocab", "expected an object of token -> id");
  std::int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 0 ||
        it->get<std::int64_t>() >= (std::int64_t{1} << 31)) {
      json_fail(where + ".vocab", "token '" + it.key() + "' has id " + json_excerpt(*it) +
                                      ", expected an integer in [0, 2^31)");
    }
    const auto id = static_cast<std::int32_t>(it->get<std::int64_t>());
    m.vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  m.id_to_token_.assign(static_cast<std::size_t>(max_id + 1), std::string());
  m.has_id_.assign(static_cast<std::size_t>(max_id + 1), false);
  for (const auto& [token, id] : m.vocab_) {
    m.id_to_token_[static_cast<std::size_t>(id)] = token;
    m.has_id_[static_cast<std::size_t>(id)] = true;
  }

  const Json dropout = spec.value("dropout", Json());
  if (!dropout.is_null() && !(dropout.is_number() && dropout.get<double>() == 0.0)) {
    json_fail(where + ".dropout", "BPE dropout " + json_excerpt(dropout) +
                                      " is not supported (it makes encoding random); set null");
  }
  m.fuse_unk_ = json_bool_or(spec, "fuse_unk", false, where);
  m.byte_fallback_ = json_bool_or(spec, "byte_fallback", false, where);
  m.ignore_merges_ = json_bool_or(spec, "ignore_merges", false, where);
  m.continuing_prefix_ = json_string_or(spec, "continuing_subword_prefix", "", where);
  m.end_suffix_ = json_string_or(spec, "end_of_word_suffix", "", where);
  const std::string unk = json_string_or(spec, "unk_token", "", where);
  if (!unk.empty()) {
    const auto it = m.vocab_.find(unk);
    if (it == m.vocab_.end()) {
      json_fail(where + ".unk_token", "'" + unk + "' is not in the vocabulary");
    }
    m.unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const auto it = m.vocab_.find(std::string_view(name));
    m.byte_ids_[b] = it == m.vocab_.end() ? -1 : it->second;
  }

  const Json& merges = json_array(spec, "merges", where);
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& entry = merges[rank];
    const std::string at = where + ".merges[" + std::to_string(rank) + "]";
    std::string a, b;
    if (entry.is_string()) {
      const std::string s = entry.get<std::string>();
      const std::size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        json_fail(at, "expected \"left right\" (one space), got '" + s + "'");
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() &&
               entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      json_fail(at, "expected \"left right\" or [\"left\", \"right\"], got " + json_excerpt(entry));
    }
    const auto ia = m.vocab_.find(a), ib = m.vocab_.find(b);
    if (ia == m.vocab_.end() || ib == m.vocab_.end()) {
      json_fail(at,
                "merge token '" + (ia == m.vocab_.end() ? a : b) + "' is not in the vocabulary");
    }
    // As tokenizers: the right side loses the continuing-subword prefix when merged.
    const std::size_t strip = std::min(m.continuing_prefix_.size(), b.size());
    const std::string merged = a + b.substr(strip);
    const auto im = m.vocab_.find(merged);
    if (im == m.vocab_.end()) {
      json_fail(at, "merged token '" + merged + "' is not in the vocabulary");
    }
    // A repeated pair keeps its last rank, as tokenizers' map construction does.
    m.merges_[pair_key(ia->second, ib->second)] = {static_cast<std::int32_t>(rank), im->second};
  }
  return m;
}

std::optional<std::int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= has_id_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[static_cast<std::size_t>(id)];
}

void BpeModel::tokenize(std::string_view word, std::vector<WordToken>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back({it->second, 0, static_cast<std::uint32_t>(word.size())});
      return;
    }
  }
  if (word.size() <= kCachedWordBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<WordToken> tokens;
  merge_word(word, tokens);
  out.insert(out.end(), tokens.begin(), tokens.end());
  if (word.size() <= kCachedWordBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheLimit) cache_.clear();
    cache_.emplace(std::string(word), std::move(tokens));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<WordToken>& out) const {
  struct Symbol {
    std::int32_t id;
    std::uint32_t begin, len;  // bytes of the word
    std::int32_t prev, next;
  };
  std::vector<Symbol> symbols;
  std::uint32_t pos = 0;  // byte offset of the next symbol
  auto add = [&](std::int32_t id, std::uint32_t len) {
    const auto n = static_cast<std::int32_t>(symbols.size());
    symbols.push_back({id, pos, len, n - 1, -1});
    if (n > 0) symbols[n - 1].next = n;
    pos += len;
  };
  // An unknown character waits here: consecutive ones fuse into one <unk> when fuse_unk.
  bool unk_pending = false;
  std::uint32_t unk_len = 0;
  std::string s;
  for (std::size_t i = 0; i < word.size();) {
    std::size_t n = 0;
    decode_utf8(word, i, &n);
    const bool first = i == 0, last = i + n == word.size();
    s.assign(first ? "" : continuing_prefix_);
    s.append(word.substr(i, n));
    if (last) s += end_suffix_;
    const auto byte_len = static_cast<std::uint32_t>(n);
    i += n;
    const auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      if (unk_pending) add(*unk_id_, unk_len);
      unk_pending = false;
      add(it->second, byte_len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char c : s) all = all && byte_ids_[c] >= 0;
      if (all) {
        // (tokenizers leaves a pending <unk> pending here too.)
        for (unsigned char c : s) add(byte_ids_[c], 1);
        continue;
      }
    }
    if (!unk_id_) continue;  // no unk_token: the character is dropped, as in tokenizers
    if (unk_pending && fuse_unk_) {
      unk_len += byte_len;
    } else {
      if (unk_pending) add(*unk_id_, unk_len);
      unk_pending = true;
      unk_len = byte_len;
    }
  }
  if (unk_pending) add(*unk_id_, unk_len);

  // Lowest rank first, then leftmost; stale entries are recognised and skipped.
  struct Candidate {
    std::int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](std::int32_t left) {
    const std::int32_t right = symbols[left].next;
    if (right < 0) return;
    const auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (std::int32_t k = 0; k + 1 < static_cast<std::int32_t>(symbols.size()); ++k) consider(k);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const Symbol right = symbols[left.next];
    const auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    symbols[left.next].len = 0;
    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (const Symbol& sym : symbols) {
    if (sym.len > 0) out.push_back({sym.id, sym.begin, sym.begin + sym.len});
  }
}

}  // namespace peftrun::tok
