#include "runtime/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

namespace {

// NFC / NFD / NFKC / NFKD. The text is normalised in chunks that start at an ASCII character:
// no canonical composition has an ASCII second character and an ASCII character blocks
// reordering, so normalising chunk by chunk equals normalising the whole text, while each
// chunk's output can be aligned to the chunk it came from.
class UnicodeNormalizer : public Normalizer {
 public:
  UnicodeNormalizer(int options, std::string name) : options_(options), name_(std::move(name)) {}

  void normalize(AlignedText& t) const override {
    bool ascii = true;
    for (char c : t.text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (ascii) return;  // every normal form leaves ASCII unchanged
    AlignedText out;
    out.text.reserve(t.size());
    std::size_t b = 0;
    while (b < t.size()) {
      std::size_t e = b + 1;
      while (e < t.size() && static_cast<unsigned char>(t.text[e]) >= 0x80) ++e;
      append_chunk(t, b, e, out);
      b = e;
    }
    t = std::move(out);
  }

 private:
  void append_chunk(const AlignedText& t, std::size_t b, std::size_t e, AlignedText& out) const {
    auto copy = [&] {
      out.text.append(t.text, b, e - b);
      out.src_begin.insert(out.src_begin.end(), t.src_begin.begin() + b, t.src_begin.begin() + e);
      out.src_end.insert(out.src_end.end(), t.src_end.begin() + b, t.src_end.begin() + e);
    };
    if (e - b == 1) return copy();  // a lone ASCII byte
    utf8proc_uint8_t* mapped = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(
        reinterpret_cast<const utf8proc_uint8_t*>(t.text.data() + b),
        static_cast<utf8proc_ssize_t>(e - b), &mapped, static_cast<utf8proc_option_t>(options_));
    if (n < 0) {
      throw std::runtime_error(name_ + " normalizer: " + utf8proc_errmsg(n));
    }
    const std::string_view result(reinterpret_cast<const char*>(mapped),
                                  static_cast<std::size_t>(n));
    if (result == std::string_view(t.text).substr(b, e - b)) {
      copy();
    } else {
      out.text.append(result);
      out.src_begin.insert(out.src_begin.end(), result.size(), t.src_begin[b]);
      out.src_end.insert(out.src_end.end(), result.size(), t.src_end[e - 1]);
    }
    std::free(mapped);
  }

  int options_;
  std::string name_;
};

// Unicode lower case per character, as Rust's char::to_lowercase (utf8proc's simple mapping
// plus the one unconditional multi-character mapping, U+0130).
class Lowercase : public Normalizer {
 public:
  void normalize(AlignedText& t) const override {
    t.map_chars([](char32_t cp, std::string& out) {
      if (cp == 0x130) {
        append_utf8(out, U'i');
        append_utf8(out, 0x307);
        return;
      }
      append_utf8(out, static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
    });
  }
};

class Replace : public Normalizer {
 public:
  Replace(Regex re, std::string content) : re_(std::move(re)), content_(std::move(content)) {}
  void normalize(AlignedText& t) const override { t.replace_all(re_, content_); }

 private:
  Regex re_;
  std::string content_;
};

class Prepend : public Normalizer {
 public:
  explicit Prepend(std::string s) : s_(std::move(s)) {}
  void normalize(AlignedText& t) const override { t.prepend(s_); }

 private:
  std::string s_;
};

class Strip : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(AlignedText& t) const override {
    std::size_t b = 0, e = t.size();
    while (left_ && b < e) {
      std::size_t n = 0;
      if (!is_whitespace(decode_utf8(t.text, b, &n))) break;
      b += n;
    }
    while (right_ && e > b) {
      std::size_t start = e - 1;
      while (start > b && (static_cast<unsigned char>(t.text[start]) & 0xC0) == 0x80) --start;
      std::size_t n = 0;
      if (!is_whitespace(decode_utf8(t.text, start, &n))) break;
      e = start;
    }
    if (b != 0 || e != t.size()) t = t.slice(b, e);
  }

 private:
  bool left_, right_;
};

class StripAccents : public Normalizer {
 public:
  void normalize(AlignedText& t) const override {
    t.map_chars([](char32_t cp, std::string& out) {
      const auto c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
      if (c != UTF8PROC_CATEGORY_MN && c != UTF8PROC_CATEGORY_MC && c != UTF8PROC_CATEGORY_ME) {
        append_utf8(out, cp);
      }
    });
  }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void normalize(AlignedText& t) const override {
    for (const auto& s : steps_) s->normalize(t);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const Json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, where);
  constexpr int kStable = UTF8PROC_STABLE;
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE, type);
  if (type == "NFD") {
    return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE, type);
  }
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, type);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT,
                                               type);
  }
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Replace") {
    return std::make_unique<Replace>(json_pattern(spec, "pattern", where),
                                     json_string(spec, "content", where));
  }
  if (type == "Prepend") return std::make_unique<Prepend>(json_string(spec, "prepend", where));
  if (type == "Strip") {
    return std::make_unique<Strip>(json_bool_or(spec, "strip_left", true, where),
                                   json_bool_or(spec, "strip_right", true, where));
  }
  if (type == "Sequence") {
    return std::make_unique<SequenceNormalizer>(
        json_sequence(spec, "normalizers", where, parse_normalizer));
  }
  json_fail(where, "normalizer type '" + type +
                       "' is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Replace, "
                       "Prepend, Strip, StripAccents, Sequence)");
}

}  // namespace peftrun::tok
