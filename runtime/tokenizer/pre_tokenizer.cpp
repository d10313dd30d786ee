#include "runtime/tokenizer/pre_tokenizer.h"

#include <functional>

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

namespace {

// What happens to the delimiters (matches) when a piece is split; tokenizers' names.
enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Segment {
  std::size_t begin, end;
  bool is_match;
};

// The whole text as alternating (non-)match segments, from regex matches.
std::vector<Segment> regex_segments(const Regex& re, const std::string& text) {
  std::vector<ByteSpan> matches;
  re.find_all(text, matches);
  std::vector<Segment> out;
  std::size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (prev != b) out.push_back({prev, b, false});
    out.push_back({b, e, true});
    prev = e;
  }
  if (prev != text.size()) out.push_back({prev, text.size(), false});
  return out;
}

// The same, where every character satisfying `pred` is one match.
std::vector<Segment> char_segments(const std::string& text,
                                   const std::function<bool(char32_t)>& pred) {
  std::vector<Segment> out;
  std::size_t last = 0;
  for (std::size_t i = 0; i < text.size();) {
    std::size_t n = 0;
    const char32_t cp = decode_utf8(text, i, &n);
    if (pred(cp)) {
      if (last < i) out.push_back({last, i, false});
      out.push_back({i, i + n, true});
      last = i + n;
    }
    i += n;
  }
  if (last < text.size()) out.push_back({last, text.size(), false});
  return out;
}

void invert(std::vector<Segment>& segments) {
  for (Segment& s : segments) s.is_match = !s.is_match;
}

// tokenizers' NormalizedString::split: merges segments as `behavior` says, drops removed and
// empty ones, and appends the slices to `out`.
void split_segments(const AlignedText& t, const std::vector<Segment>& segs, Behavior behavior,
                    std::vector<AlignedText>& out) {
  struct Piece {
    std::size_t begin, end;
    bool remove;
  };
  std::vector<Piece> pieces;
  switch (behavior) {
    case Behavior::kIsolated:
      for (const Segment& s : segs) pieces.push_back({s.begin, s.end, false});
      break;
    case Behavior::kRemoved:
      for (const Segment& s : segs) pieces.push_back({s.begin, s.end, s.is_match});
      break;
    case Behavior::kContiguous: {
      bool previous = false;
      for (const Segment& s : segs) {
        if (s.is_match == previous && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back({s.begin, s.end, false});
        }
        previous = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithPrevious: {
      bool previous = false;
      for (const Segment& s : segs) {
        if (s.is_match && !previous && !pieces.empty()) {
          pieces.back().end = s.end;
        } else {
          pieces.push_back({s.begin, s.end, false});
        }
        previous = s.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous = false;
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !previous && !pieces.empty()) {
          pieces.back().begin = it->begin;
        } else {
          pieces.push_back({it->begin, it->end, false});
        }
        previous = it->is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
  }
  for (const Piece& p : pieces) {
    if (!p.remove && p.end > p.begin) out.push_back(t.slice(p.begin, p.end));
  }
}

Behavior parse_behavior(const Json& spec, const std::string& where) {
  const std::string b = json_string(spec, "behavior", where);
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  json_fail(where + ".behavior", "unknown split behavior '" + b + "'");
}

// Rewrites every byte as its GPT-2 alphabet character, keeping each byte's alignment.
AlignedText to_byte_alphabet(const AlignedText& t) {
  AlignedText out;
  out.text.reserve(t.size() * 2);
  for (std::size_t i = 0; i < t.size(); ++i) {
    const std::string& c = byte_to_utf8(static_cast<std::uint8_t>(t.text[i]));
    out.text += c;
    out.src_begin.insert(out.src_begin.end(), c.size(), t.src_begin[i]);
    out.src_end.insert(out.src_end.end(), c.size(), t.src_end[i]);
  }
  return out;
}

class ByteLevel : public PreTokenizer {
 public:
  ByteLevel(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {
    if (use_regex_) {
      // GPT-2's pattern, built into tokenizers' ByteLevel pre-tokenizer.
      re_ = Regex::pattern(
          R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
          "ByteLevel pre-tokenizer");
    }
  }
  void split(AlignedText piece, std::vector<AlignedText>& out) const override {
    if (add_prefix_space_ && piece.text[0] != ' ') piece.prepend(" ");
    if (!use_regex_) {
      out.push_back(to_byte_alphabet(piece));
      return;
    }
    std::vector<AlignedText> words;
    split_segments(piece, regex_segments(re_, piece.text), Behavior::kIsolated, words);
    for (const AlignedText& w : words) out.push_back(to_byte_alphabet(w));
  }

 private:
  bool add_prefix_space_, use_regex_;
  Regex re_;
};

class Split : public PreTokenizer {
 public:
  Split(Regex re, Behavior behavior, bool invert)
      : re_(std::move(re)), behavior_(behavior), invert_(invert) {}
  void split(AlignedText piece, std::vector<AlignedText>& out) const override {
    std::vector<Segment> segs = regex_segments(re_, piece.text);
    if (invert_) invert(segs);
    split_segments(piece, segs, behavior_, out);
  }

 private:
  Regex re_;
  Behavior behavior_;
  bool invert_;
};

class Metaspace : public PreTokenizer {
 public:
  enum class Prepend { kAlways, kFirst, kNever };
  Metaspace(char32_t replacement, Prepend prepend, bool split)
      : replacement_(replacement), prepend_(prepend), split_(split) {
    append_utf8(replacement_utf8_, replacement_);
  }
  void split(AlignedText piece, std::vector<AlignedText>& out) const override {
    piece.map_chars([this](char32_t cp, std::string& s) {
      if (cp == U' ') {
        s += replacement_utf8_;
      } else {
        append_utf8(s, cp);
      }
    });
    const bool starts_with =
        piece.text.compare(0, replacement_utf8_.size(), replacement_utf8_) == 0;
    // 'first': only the piece at the very start of the input, not the text after a special token.
    if (!starts_with && (prepend_ == Prepend::kAlways ||
                         (prepend_ == Prepend::kFirst && piece.original_begin(0) == 0))) {
      piece.prepend(replacement_utf8_);
    }
    if (!split_) {
      out.push_back(std::move(piece));
      return;
    }
    const char32_t r = replacement_;
    split_segments(piece, char_segments(piece.text, [r](char32_t cp) { return cp == r; }),
                   Behavior::kMergedWithNext, out);
  }

 private:
  char32_t replacement_;
  std::string replacement_utf8_;
  Prepend prepend_;
  bool split_;
};

class Digits : public PreTokenizer {
 public:
  explicit Digits(bool individual) : individual_(individual) {}
  void split(AlignedText piece, std::vector<AlignedText>& out) const override {
    split_segments(piece, char_segments(piece.text, is_numeric),
                   individual_ ? Behavior::kIsolated : Behavior::kContiguous, out);
  }

 private:
  bool individual_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  // Each step maps every piece to pieces independently, so applying the steps piece by piece
  // equals tokenizers' step-by-step over the whole list.
  void split(AlignedText piece, std::vector<AlignedText>& out) const override {
    std::vector<AlignedText> current, next;
    current.push_back(std::move(piece));
    for (const auto& step : steps_) {
      next.clear();
      for (AlignedText& p : current) step->split(std::move(p), next);
      std::swap(current, next);
    }
    for (AlignedText& p : current) out.push_back(std::move(p));
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const Json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, where);
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevel>(json_bool_or(spec, "add_prefix_space", true, where),
                                       json_bool_or(spec, "use_regex", true, where));
  }
  if (type == "Split") {
    return std::make_unique<Split>(json_pattern(spec, "pattern", where),
                                   parse_behavior(spec, where),
                                   json_bool_or(spec, "invert", false, where));
  }
  if (type == "Metaspace") {
    const std::string rep = json_string(spec, "replacement", where);
    std::size_t n = 0;
    const char32_t r = rep.empty() ? U'\u2581' : decode_utf8(rep, 0, &n);
    if (rep.empty() || n != rep.size()) {
      json_fail(where + ".replacement", "expected one character, got '" + rep + "'");
    }
    Metaspace::Prepend prepend = Metaspace::Prepend::kAlways;
    const std::string scheme = json_string_or(spec, "prepend_scheme", "always", where);
    if (scheme == "first") {
      prepend = Metaspace::Prepend::kFirst;
    } else if (scheme == "never") {
      prepend = Metaspace::Prepend::kNever;
    } else if (scheme != "always") {
      json_fail(where + ".prepend_scheme", "expected always, first or never, got '" + scheme + "'");
    }
    // Files from before prepend_scheme existed say add_prefix_space: false for 'never'.
    if (!json_bool_or(spec, "add_prefix_space", true, where)) prepend = Metaspace::Prepend::kNever;
    return std::make_unique<Metaspace>(r, prepend, json_bool_or(spec, "split", true, where));
  }
  if (type == "Digits") {
    return std::make_unique<Digits>(json_bool_or(spec, "individual_digits", false, where));
  }
  if (type == "Sequence") {
    return std::make_unique<SequencePreTokenizer>(
        json_sequence(spec, "pretokenizers", where, parse_pre_tokenizer));
  }
  json_fail(where, "pre_tokenizer type '" + type +
                       "' is not supported (supported: ByteLevel, Split, Metaspace, Digits, "
                       "Sequence)");
}

}  // namespace peftrun::tok
