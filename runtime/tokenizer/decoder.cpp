#include "runtime/tokenizer/decoder.h"

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"

namespace peftrun::tok {

namespace {

constexpr const char* kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

bool valid_utf8(const std::string& s) {
  return find_invalid_utf8(s) == std::string::npos;
}

class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& t : tokens) {
      std::string mapped;
      bool all = true;
      for (std::size_t i = 0; i < t.size() && all;) {
        std::size_t n = 0;
        const auto b = char_to_byte(decode_utf8(t, i, &n));
        all = b.has_value();
        if (all) mapped += static_cast<char>(*b);
        i += n;
      }
      bytes += all ? mapped : t;  // a token outside the alphabet (an added token) stays as is
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      for (std::size_t p = 0; p < t.size();) {
        if (t.compare(p, replacement_.size(), replacement_) == 0) {
          // The first token loses every replacement character when a prefix was prepended.
          if (!(i == 0 && strip_first_)) out += ' ';
          p += replacement_.size();
        } else {
          out += t[p++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Regex re, std::string content)
      : re_(std::move(re)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<ByteSpan> matches;
    for (std::string& t : tokens) {
      re_.find_all(t, matches);
      std::string out;
      std::size_t done = 0;
      for (const auto& [b, e] : matches) {
        out.append(t, done, b - done);
        out += content_;
        done = e;
      }
      out.append(t, done, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  Regex re_;
  std::string content_;
};

// Runs of <0xNN> tokens become the text they spell, or one U+FFFD per byte when that is not
// valid UTF-8.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    std::size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      if (valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (std::size_t k = 0; k < pending_count; ++k) out.emplace_back(kReplacementChar);
      }
      pending.clear();
      pending_count = 0;
    };
    for (std::string& t : tokens) {
      int value = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') value = hex_byte(t[3], t[4]);
      if (value >= 0) {
        pending += static_cast<char>(value);
        ++pending_count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int hex_byte(char hi, char lo) {
    const int h = hex_digit(hi), l = hex_digit(lo);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters of every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      std::vector<std::pair<std::size_t, char32_t>> chars;  // (byte offset, code point)
      for (std::size_t i = 0; i < t.size();) {
        std::size_t n = 0;
        chars.emplace_back(i, decode_utf8(t, i, &n));
        i += n;
      }
      std::size_t first = 0, last = chars.size();
      while (first < std::min(start_, chars.size()) && chars[first].second == content_) ++first;
      for (std::size_t k = 0; k < stop_ && last > first && chars[last - 1].second == content_;
           ++k) {
        --last;
      }
      const std::size_t b = first < chars.size() ? chars[first].first : t.size();
      const std::size_t e = last < chars.size() ? chars[last].first : t.size();
      t = b < e ? t.substr(b, e - b) : std::string();
    }
  }

 private:
  char32_t content_;
  std::size_t start_, stop_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps_) s->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

std::size_t json_count(const Json& spec, const char* key, const std::string& where) {
  const Json& v = json_field(spec, key, where);
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0) {
    json_fail(where + "." + key, "expected a non-negative integer, got " + json_excerpt(v));
  }
  return v.get<std::size_t>();
}

}  // namespace

std::string utf8_lossy(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    // Expected length and the valid range of the second byte (Unicode Table 3-7).
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (len == 0) {  // not a lead byte
      out += kReplacementChar;
      ++i;
      continue;
    }
    std::size_t k = 1;
    while (k < len && i + k < n) {
      const unsigned char b = p[i + k];
      const bool ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
      if (!ok) break;
      ++k;
    }
    if (k == len) {
      out.append(s, i, len);
    } else {
      out += kReplacementChar;  // the maximal subpart p[i, i + k) is one replacement
    }
    i += k;
  }
  return out;
}

std::unique_ptr<Decoder> parse_decoder(const Json& spec, const std::string& where) {
  if (spec.is_null()) return nullptr;
  const std::string type = json_type(spec, where);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    std::string scheme = json_string_or(spec, "prepend_scheme", "always", where);
    if (!json_bool_or(spec, "add_prefix_space", true, where)) scheme = "never";
    return std::make_unique<MetaspaceDecoder>(json_string(spec, "replacement", where),
                                              scheme != "never");
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(json_pattern(spec, "pattern", where),
                                            json_string(spec, "content", where));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = json_string(spec, "content", where);
    std::size_t n = 0;
    if (content.empty() || (decode_utf8(content, 0, &n), n != content.size())) {
      json_fail(where + ".content", "expected one character, got '" + content + "'");
    }
    return std::make_unique<StripDecoder>(decode_utf8(content, 0, &n),
                                          json_count(spec, "start", where),
                                          json_count(spec, "stop", where));
  }
  if (type == "Sequence") {
    return std::make_unique<SequenceDecoder>(json_sequence(spec, "decoders", where, parse_decoder));
  }
  json_fail(where, "decoder type '" + type +
                       "' is not supported (supported: ByteLevel, Metaspace, Replace, "
                       "ByteFallback, Fuse, Strip, Sequence)");
}

}  // namespace peftrun::tok
